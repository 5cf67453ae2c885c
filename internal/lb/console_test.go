package lb

import (
	"encoding/json"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/moatlb/moat/internal/awsapi/sigv4"
	"github.com/moatlb/moat/internal/console"
)

// TestConsole: moat lb serves the console on its metrics address, behind a sign-in with a key
// of its credentials file, with a snapshot of its state; --console=false serves none.
func TestConsole(t *testing.T) {
	eps := startLBWith(t, func(cfg *Config) { cfg.Console = true })
	if eps.Console != eps.Metrics+console.Path {
		t.Fatalf("console URL %q, want %s%s", eps.Console, eps.Metrics, console.Path)
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	if resp, err := c.Get(eps.Console + "/api/snapshot"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("snapshot without a session: %v %v", resp, err)
	}
	keys, err := sigv4.LoadFile(eps.CredentialsFile)
	if err != nil {
		t.Fatal(err)
	}
	for id, key := range keys {
		resp, err := c.PostForm(eps.Console+"/signin", url.Values{"access_key_id": {id}, "secret_access_key": {key.Secret}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		break
	}
	resp, err := c.Get(eps.Console + "/api/snapshot")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var snap console.Snapshot
	if err := json.NewDecoder(resp.Body).Decode(&snap); resp.StatusCode != http.StatusOK || err != nil {
		t.Fatalf("snapshot: %d %v", resp.StatusCode, err)
	}
	// The default inventory: its nodes' interfaces, each in its VPC's default group.
	if len(snap.Interfaces) == 0 || len(snap.SecurityGroups) == 0 {
		t.Fatalf("snapshot of the default inventory: %+v", snap)
	}
	// Without the instance firewall (off here, as where moat lb may not run it), the feed says
	// why denials to instances are not listed.
	resp, err = c.Get(eps.Console + "/api/denials")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var denials console.Denials
	if err := json.NewDecoder(resp.Body).Decode(&denials); err != nil {
		t.Fatal(err)
	}
	if want := "Denied flows to instances are not listed one by one: the instance firewall is off."; !slices.Contains(denials.Notes, want) {
		t.Fatalf("notes %q lack %q", denials.Notes, want)
	}
	group := snap.Interfaces[0].Groups[0]
	for _, g := range snap.SecurityGroups {
		if g.ID == group && len(g.UsedBy) > 0 && g.UsedBy[0] == snap.Interfaces[0].ID {
			return
		}
	}
	t.Fatalf("group %s of %s: not used by it in %+v", group, snap.Interfaces[0].ID, snap.SecurityGroups)
}

func TestConsoleOff(t *testing.T) {
	eps := startLBWith(t, func(cfg *Config) { cfg.Console = false })
	if eps.Console != "" {
		t.Fatalf("console URL %q with the console off", eps.Console)
	}
	resp, err := http.Get(eps.Metrics + console.Path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /console with the console off: %d, want 404", resp.StatusCode)
	}
}
