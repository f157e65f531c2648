// Flight sleeper sleeps spec.seconds (default 3600, fractions allowed) with
// time.Sleep, a WASI poll_oneoff call, then outputs a ConfigMap "<name>-slept".
package main

import (
	"strconv"
	"time"

	"atc.test/flights/internal/testflight"
)

type input struct {
	Metadata testflight.Meta `json:"metadata"`
	Spec     struct {
		Seconds *float64 `json:"seconds"`
	} `json:"spec"`
}

func main() {
	var in input
	testflight.ReadInput(&in)
	seconds := 3600.0
	if in.Spec.Seconds != nil {
		seconds = *in.Spec.Seconds
	}
	time.Sleep(time.Duration(seconds * float64(time.Second)))
	data := map[string]string{"slept": strconv.FormatFloat(seconds, 'f', -1, 64)}
	testflight.WriteJSON([]testflight.Object{testflight.ConfigMap(in.Metadata, in.Metadata.Name+"-slept", data)})
}
