package lb

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moatlb/moat/internal/cloud"
	"github.com/moatlb/moat/internal/dataplane"
	"github.com/moatlb/moat/internal/firewall"
	"github.com/moatlb/moat/internal/secgroup"
	"github.com/moatlb/moat/internal/sgresolve"
)

// startFirewall starts the instance firewall as mode asks, writing the
// denials it sees to flowLog (when set). Where moat may not enforce, it says
// so in one line and returns nil with the status to show beside the
// endpoints: nothing is ever silently unenforced.
func startFirewall(mode firewall.Mode, dataDir string, flowLog io.Writer, reg prometheus.Registerer, log *slog.Logger) (*firewall.Firewall, string) {
	if mode == firewall.Off {
		return nil, string(firewall.Off)
	}
	fw, err := firewall.New(firewall.Options{Table: firewallTable(dataDir), FlowLog: flowLog, Registerer: reg, Log: log})
	if err != nil {
		log.Warn("instance security groups are NOT enforced: moat lb may not program the kernel's firewall (it needs root or CAP_NET_ADMIN and nftables)", "reason", err)
		return nil, "not enforced: " + err.Error()
	}
	log.Info("instance security groups enforced on this host's instance addresses", "mode", mode)
	return fw, string(mode)
}

// stopFirewall removes the firewall's rules on a clean stop: the instances on this host go with
// moat lb, and a table left behind would go on enforcing a state nobody maintains. A moat lb that
// crashes leaves its rules in place (the instances stay protected), and the next one on the same
// data dir replaces them.
func stopFirewall(fw *firewall.Firewall, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := fw.Wait(ctx, fw.Apply(firewall.Program{Mode: firewall.Off})); err != nil {
		log.Warn("instance firewall rules left in the kernel", "error", err)
	}
	fw.Close()
}

// firewallTable names the firewall's table after the data dir, whose lock
// (the store's) makes one moat lb its only owner: the next moat lb on the same
// data dir replaces the table, and no other touches it.
func firewallTable(dataDir string) string {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		abs = dataDir
	}
	sum := sha256.Sum256([]byte(abs))
	return hex.EncodeToString(sum[:4])
}

// desiredFirewall is the firewall program for the instance interfaces whose private addresses
// are on this host (local). It is pure.
func desiredFirewall(st cloud.State, n *network, mode firewall.Mode, local func(netip.Addr) bool) firewall.Program {
	return sgresolve.Firewall(st, n.Resolver, mode, func(_ cloud.NetworkInterface, a netip.Addr) bool { return local(a) })
}

// listenerLog is what the firewall should log of the listeners' denials (firewall.Listener):
// every IPv4 listener socket of cfg whose groups admit not everyone, with the clients they
// admit. The firewall only logs; the data plane's sockets drop.
func listenerLog(cfg dataplane.Config) []firewall.Listener {
	var out []firewall.Listener
	for _, lb := range cfg.LoadBalancers {
		for _, z := range lb.Zones {
			if !z.Addr.Unmap().Is4() {
				continue
			}
			for _, l := range lb.Listeners {
				for _, side := range []struct {
					protocol int
					admit    *secgroup.Policy
				}{{secgroup.ProtocolTCP, l.AdmitTCP}, {secgroup.ProtocolUDP, l.AdmitUDP}} {
					if side.admit == nil {
						continue // no groups, or not this protocol
					}
					v4, _ := side.admit.Ranges()
					out = append(out, firewall.Listener{LoadBalancer: lb.ID, ID: l.ID, Addr: netip.AddrPortFrom(z.Addr.Unmap(), l.Port),
						Protocol: side.protocol, Admit: v4})
				}
			}
		}
	}
	return out
}
