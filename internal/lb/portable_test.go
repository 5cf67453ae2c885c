package lb

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/moatlb/moat/internal/secgroup"
)

// Where denied clients are reset rather than dropped (no socket filters, or the moat_portable
// tag), the start says so in one line; with socket filters it says nothing.
func TestLogPortableDataPlane(t *testing.T) {
	var buf bytes.Buffer
	logPortableDataPlane(slog.New(slog.NewTextHandler(&buf, nil)))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if secgroup.SocketFilters {
		if buf.Len() != 0 {
			t.Errorf("with socket filters: logged %q, want nothing", buf.String())
		}
		return
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], "accepted and reset") {
		t.Errorf("without socket filters: logged %q, want one warning that denied clients are reset", buf.String())
	}
}
