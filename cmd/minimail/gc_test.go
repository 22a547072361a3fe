package main

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// serve runs the collector at serveGOGC, and at the operator's GOGC when
// one is set; the metrics listener shows which (go_gc_gogc_percent).
func TestServe_PacesTheCollectorUnlessGOGCIsSet(t *testing.T) {
	for _, tc := range []struct {
		name, env string
		want      float64
	}{
		{"no GOGC", "", serveGOGC},
		{"the operator's GOGC", "GOGC=80", 80},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := initSite(t)
			metrics := freePort(t)
			setListen(t, cfg, map[string]string{"smtp": freePort(t), "metrics": metrics})
			serve := exec.Command(binary, "--config", cfg, "serve")
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "GOGC=") {
					serve.Env = append(serve.Env, kv)
				}
			}
			if tc.env != "" {
				serve.Env = append(serve.Env, tc.env)
			}
			startServing(t, serve, 2)
			c := &http.Client{Timeout: 10 * time.Second}
			resp, err := c.Get("http://" + metrics + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if got, ok := samples(t, string(b))["go_gc_gogc_percent"]; !ok || got != tc.want {
				t.Fatalf("go_gc_gogc_percent %v (listed: %v), want %v", got, ok, tc.want)
			}
		})
	}
}
