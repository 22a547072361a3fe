package main

import (
	"os"
	"runtime/debug"
)

// serveGOGC is the collector's pace while serving, unless the operator
// sets GOGC: a collection once the heap has grown by half of what is live,
// not by all of it (Go's default, 100). Small mail keeps little live (3-4
// MB at 32 sessions of 4 KiB messages), so a collection costs little, and
// the heap's growth between collections is most of the process's own
// memory. 2000-3000 messages of 4 KiB by smtpload, GOGC=50 against the
// default, two fresh servers each, in turn: peak anonymous memory 8.7-9.3
// MB against 10.1-12.0 at 32 sessions and 7.7-9.4 against 9.6-10.9 at 8,
// the same msg/s and CPU within their noise (0.64-0.83 s against 0.63-0.90
// at 32 sessions). Bursts of big mail pace the collector themselves (mta's
// burstGC), up to Go's default, and put this back after.
const serveGOGC = 50

// paceCollector sets serveGOGC unless GOGC is in the environment.
func paceCollector() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(serveGOGC)
	}
}
