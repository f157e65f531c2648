// Package hoststate names the outcome of a host call made through yoke's SDK
// (k8s.Lookup, k8s.GetRestMapping) with the words the tests assert on.
package hoststate

import (
	"errors"

	"github.com/yokecd/yoke/pkg/flight/wasi/k8s"
)

// Of returns found, notfound, forbidden, unauthenticated, notgranted or error.
func Of(err error) string {
	switch {
	case err == nil:
		return "found"
	case k8s.IsErrNotFound(err):
		return "notfound"
	case k8s.IsErrForbidden(err):
		return "forbidden"
	case k8s.IsErrUnauthenticated(err):
		return "unauthenticated"
	case errors.Is(err, k8s.ErrorClusterAccessNotGranted):
		return "notgranted"
	default:
		return "error"
	}
}
