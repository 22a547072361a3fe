package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
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
			_, body := scrapeAddr(t, metrics, "/metrics")
			if got, ok := samples(t, body)["go_gc_gogc_percent"]; !ok || got != tc.want {
				t.Fatalf("go_gc_gogc_percent %v (listed: %v), want %v", got, ok, tc.want)
			}
		})
	}
}
