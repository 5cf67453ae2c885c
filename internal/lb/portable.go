package lb

import (
	"log/slog"
	"runtime"

	"github.com/moatlb/moat/internal/secgroup"
)

// logPortableDataPlane says once, at start, how this system's data plane differs from Linux's,
// so that a user who sees a denied client reset instead of timing out knows why.
func logPortableDataPlane(log *slog.Logger) {
	if secgroup.SocketFilters {
		return
	}
	log.Warn("no socket filters on this system: a denied TCP client's connection is accepted and reset instead of timing out, and its bytes never reach a target",
		"os", runtime.GOOS)
}
