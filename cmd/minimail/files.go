package main

import (
	"errors"
	"os"
)

// checkFiles opens every file the config names for serve before anything
// starts, so a missing or unreadable one is a config error (exit 2, naming
// the config file and the key) rather than a runtime failure: systemd's
// RestartPreventExitStatus=2 then stops, instead of restarting every 5 s a
// server that cannot start until the operator acts.
func (c *Config) checkFiles() error {
	for _, f := range []struct{ key, path string }{
		{"tls.cert", c.TLS.Cert},
		{"tls.key", c.TLS.Key},
		{"dkim.key", c.DKIM.Key},
		{"acme.ca", c.ACME.CA},
	} {
		if f.path == "" {
			continue
		}
		fh, err := os.Open(f.path)
		if errors.Is(err, os.ErrPermission) {
			return c.fail(f.key, "%v: %s, which cannot read it (README, Run it for your domain, shows the modes)", err, accessHint(err))
		}
		if err != nil {
			return c.fail(f.key, "%v", err)
		}
		fh.Close()
	}
	return nil
}
