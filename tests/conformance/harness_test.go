// Harness for yoke's own ATC test suite, run against this project's two services.
//
// This file is ours. tests/conformance/yokesuite.py copies it next to yoke's test files (cmd/atc of
// the yoke module, downloaded by the Go toolchain at test time) after renaming yoke's TestMain, so
// this TestMain runs instead. Everything yoke's TestMain did with kind, docker images, the
// atc-installer and an in-cluster registry is done by the Python side (tests/conformance/): a local
// control plane, our services run as processes under the chart's ServiceAccounts, and a real OCI
// registry on loopback. What stays here is what must run as Go: building yoke's test flights and
// pushing them with yoke's own `yoke.Stow`, and the bridge the adapted tests use to reconfigure our
// services. docs/compatibility.md lists every edit of a test body and why.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/yokecd/yoke/cmd/atc-installer/installer"
	"github.com/yokecd/yoke/pkg/yoke"
)

// conformanceFlights are the test flights yoke's suite pulls from oci://registry:80/<name>, with the
// package each one is built from (relative to cmd/atc).
var conformanceFlights = []struct{ name, pkg string }{
	{"flight.v1.wasm", "./internal/testing/apis/backend/v1/flight"},
	{"flight.v1.modes.wasm", "./internal/testing/apis/backend/v1/modeFlight"},
	{"flight.v2.wasm", "./internal/testing/apis/backend/v2/flight"},
	{"flight.dev.wasm", "./internal/testing/apis/backend/v2/dev"},
	{"converter.wasm", "./internal/testing/apis/backend/converter"},
	{"crossnamespace.wasm", "./internal/testing/flights/crossnamespace"},
	{"longrunning.wasm", "./internal/testing/flights/longrunning"},
	{"resourceaccessmatchers.wasm", "./internal/testing/flights/resourceaccessmatchers"},
	{"status.wasm", "./internal/testing/flights/status"},
	{"deploymentstatus.wasm", "./internal/testing/flights/deploymentstatus"},
	{"prune.wasm", "./internal/testing/flights/prune"},
	{"externalcreation.wasm", "./internal/testing/flights/externalcreation"},
	{"timeout.wasm", "./internal/testing/flights/timeout"},
	{"subscriptions.wasm", "./internal/testing/flights/subscriptions"},
	{"basic.wasm", "./internal/testing/flights/basic"},
	{"identityerror.wasm", "./internal/testing/flights/identityerror"},
}

// TestMain runs the tests, or with ATC_CONFORMANCE_SETUP=1 only builds and pushes the test flights.
func TestMain(m *testing.M) {
	if err := os.MkdirAll("./test_output", 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if os.Getenv("ATC_CONFORMANCE_SETUP") == "1" {
		if err := buildAndStowFlights(); err != nil {
			fmt.Fprintln(os.Stderr, "conformance setup:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// buildAndStowFlights builds every test flight for wasip1 (two at a time) and pushes each one to the
// loopback registry as yoke's TestMain does, at oci://localhost:5001/<name>.
func buildAndStowFlights() error {
	outDir := "./build_output/module"
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	var (
		wg    sync.WaitGroup
		slots = make(chan struct{}, 2)
		errs  = make([]error, len(conformanceFlights))
	)
	for i, f := range conformanceFlights {
		wg.Add(1)
		go func() {
			defer wg.Done()
			slots <- struct{}{}
			defer func() { <-slots }()
			errs[i] = buildAndStow(f.name, f.pkg, filepath.Join(outDir, f.name))
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func buildAndStow(name, pkg, out string) error {
	started := time.Now()
	build := exec.Command("go", "build", "-o", out, pkg)
	build.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building %s from %s: %w", name, pkg, err)
	}
	if err := yoke.Stow(context.Background(), yoke.StowParams{WasmFile: out, URL: "oci://localhost:5001/" + name}); err != nil {
		return fmt.Errorf("stowing %s: %w", name, err)
	}
	fmt.Printf("stowed %s in %s\n", name, time.Since(started).Round(time.Millisecond))
	return nil
}

// harnessTakeoff stands in for commander.Takeoff in the code-signing tests. A takeoff of yoke's
// atc-installer (release "atc" in namespace "atc") reinstalls yoke's ATC with new settings; here the
// installer's settings that concern the ATC's behaviour (module verification keys and allow-list)
// are sent to the harness's supervisor, which restarts our two services with them and answers once
// both are ready again. Every other takeoff is passed to yoke unchanged.
func harnessTakeoff(commander *yoke.Commander, ctx context.Context, params yoke.TakeoffParams) error {
	if params.Release != "atc" || params.Namespace != "atc" {
		return commander.Takeoff(ctx, params)
	}
	var cfg installer.Config
	if err := json.NewDecoder(params.Flight.Input).Decode(&cfg); err != nil {
		return fmt.Errorf("harness: reading the installer settings: %w", err)
	}
	body, err := json.Marshal(map[string]any{
		"moduleVerificationKeys": cfg.ModuleVerificationKeys,
		"moduleAllowList":        cfg.ModuleAllowList,
	})
	if err != nil {
		return err
	}
	return callSupervisor(ctx, "/reinstall", body)
}

func callSupervisor(ctx context.Context, path string, body []byte) error {
	base := os.Getenv("ATC_CONFORMANCE_CONTROL")
	if base == "" {
		return fmt.Errorf("harness: ATC_CONFORMANCE_CONTROL is not set")
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	request, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	request.Header.Set("Content-Type", "application/json")
	response, err := http.DefaultClient.Do(request)
	if err != nil {
		return fmt.Errorf("harness: calling the supervisor: %w", err)
	}
	defer response.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(response.Body, 1<<16))
	if response.StatusCode != http.StatusOK {
		return fmt.Errorf("harness: supervisor answered %d: %s", response.StatusCode, answer)
	}
	return nil
}
