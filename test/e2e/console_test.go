package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/chromedp/chromedp"
	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/moatlb/moat/internal/awsapi/sigv4"
)

// TestConsole signs in to the web console of `moat up --demo` with headless Chromium, as a user
// would, and finds there the demo's load balancer, its groups and healthy targets; then a
// connection from the demo's denied client shows up in the denied-flows feed with the rule that
// would have admitted it. Without a session, the console's data answers 401.
// MOAT_CONSOLE_SCREENSHOT=path keeps a screenshot of the page (docs/console.png is one).
func TestConsole(t *testing.T) {
	browserPath := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			browserPath = p
			break
		}
	}
	if browserPath == "" {
		t.Skip("no Chromium: install Debian's chromium (apt-get install chromium) to run the console's browser test")
	}
	ensureKubeAssets(t)
	demoPort := upPort(t)
	up := startUp(t, t.TempDir(), "--demo", "--demo-port", fmt.Sprint(demoPort))
	up.waitOutput("The demo is running", 3*time.Minute)
	if !strings.Contains(up.out.String(), "web console        "+up.st.LB.Metrics+"/console") {
		t.Fatalf("moat up does not print the console's URL:\n%s", up.out)
	}
	consoleURL := up.st.LB.Metrics + "/console"

	for _, path := range []string{"/api/snapshot", "/api/denials", "/api/events", "/api/explain?from=127.0.0.3&to=x:1"} {
		resp, err := http.Get(consoleURL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("GET %s without a session: %d, want 401", path, resp.StatusCode)
		}
	}

	ctx := context.Background()
	_, elbc := up.aws()
	lbs, err := elbc.DescribeLoadBalancers(ctx, &elbv2.DescribeLoadBalancersInput{})
	if err != nil || len(lbs.LoadBalancers) != 1 {
		t.Fatalf("DescribeLoadBalancers: %v %+v", err, lbs)
	}
	demoLB := lbs.LoadBalancers[0]
	lbName := aws.ToString(demoLB.LoadBalancerName)
	var svc corev1.Service
	if err := up.kube().Get(ctx, client.ObjectKey{Namespace: "moat-demo", Name: "webserver"}, &svc); err != nil {
		t.Fatal(err)
	}
	id, secret := credentialsKey(t, up.st.LB.CredentialsFile)

	alloc, stopAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browserPath), chromedp.NoSandbox, chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1280, 1000))...)
	defer stopAlloc()
	browser, stopBrowser := chromedp.NewContext(alloc)
	defer stopBrowser()
	browser, cancel := context.WithTimeout(browser, 4*time.Minute)
	defer cancel()
	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(browser, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	// A wrong secret is refused on the sign-in page; the right one opens the console.
	run("sign in with a wrong secret", chromedp.Navigate(consoleURL), chromedp.WaitVisible(chromedp.ID("access-key-id")),
		chromedp.SendKeys(chromedp.ID("access-key-id"), id), chromedp.SendKeys(chromedp.ID("secret-access-key"), "wrong"),
		chromedp.Click(chromedp.ID("sign-in")), chromedp.WaitVisible(chromedp.ID("problem")))
	run("sign in", chromedp.SendKeys(chromedp.ID("access-key-id"), id), chromedp.SendKeys(chromedp.ID("secret-access-key"), secret),
		chromedp.Click(chromedp.ID("sign-in")), chromedp.WaitVisible(chromedp.CSS("#lb-list article")))

	type lbView struct {
		Text    string
		Healthy int
		Targets int
	}
	lbExpr := fmt.Sprintf(`(() => { const a = document.querySelector('[id="lb-%s"]'); if (!a) return {Text: "", Healthy: 0, Targets: 0};
		return {Text: a.textContent, Healthy: a.querySelectorAll("td .badge.healthy").length, Targets: a.querySelectorAll("tbody tr").length}; })()`, lbName)
	pageUntil(t, browser, "the demo's load balancer with healthy targets", lbExpr, func(lb lbView) error {
		if !strings.Contains(lb.Text, aws.ToString(demoLB.DNSName)) || !strings.Contains(lb.Text, fmt.Sprintf("TCP %d", demoPort)) {
			return fmt.Errorf("load balancer %s: %q", lbName, lb.Text)
		}
		for _, g := range demoLB.SecurityGroups {
			if !strings.Contains(lb.Text, g) {
				return fmt.Errorf("load balancer %s lacks its group %s: %q", lbName, g, lb.Text)
			}
		}
		if lb.Targets == 0 || lb.Healthy != lb.Targets {
			return fmt.Errorf("%d of %d targets healthy: %q", lb.Healthy, lb.Targets, lb.Text)
		}
		return nil
	})
	pageUntil(t, browser, "the demo's groups", `document.getElementById("sg-list").textContent`, func(groups string) error {
		for _, g := range demoLB.SecurityGroups {
			if !strings.Contains(groups, g) {
				return fmt.Errorf("group %s missing", g)
			}
		}
		// The frontend group admits the allowed client; the nodes' group references the backend one.
		if !strings.Contains(groups, "127.0.0.2/32") || !strings.Contains(groups, "Referenced by: sg-") {
			return fmt.Errorf("no rule for the allowed client, or no group referenced: %q", groups)
		}
		return nil
	})

	// The denied client: counted at the listener, and listed one by one where moat lb may read
	// the instance firewall's packet log (which names the clients the listener's socket filter
	// drops), through the load balancer and straight to a node.
	listenerDenials := func() (count int, suggestion string) {
		rows, err := chromedp.Run(browser, chromedp.Evaluate[[][]string](`[...document.querySelectorAll("#denied-listeners tbody tr")].map(tr => [...tr.cells].map(c => c.textContent))`))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if len(r) == 5 && r[0] == lbName {
				var kernel, userspace int
				fmt.Sscan(r[2], &kernel)
				fmt.Sscan(r[3], &userspace)
				return kernel + userspace, r[4]
			}
		}
		return -1, ""
	}
	before, suggestion := listenerDenials()
	wantSuggestion := fmt.Sprintf("an inbound rule in one of the load balancer's groups %s: tcp %d from the client's address", strings.Join(demoLB.SecurityGroups, ", "), demoPort)
	if before < 0 || suggestion != wantSuggestion {
		t.Fatalf("listener row of %s: count %d, suggestion %q; want %q", lbName, before, suggestion, wantSuggestion)
	}
	addrs := lookup(t, up.st.LB.DNS, aws.ToString(demoLB.DNSName), dns.TypeA)
	if len(addrs) == 0 {
		t.Fatal("the demo's load balancer does not resolve")
	}
	if _, err := getFrom("127.0.0.3", net.JoinHostPort(addrs[0], fmt.Sprint(demoPort)), 2*time.Second); err == nil {
		t.Fatal("the denied client 127.0.0.3 was answered")
	}
	eventually(t, time.Minute, "the listener's denial count going up", func() error {
		if after, _ := listenerDenials(); after <= before {
			return fmt.Errorf("denials at %s: %d, before %d", lbName, after, before)
		}
		return nil
	})
	if up.st.LB.InstanceSecurityGroups == "enforce" {
		// Where the instance firewall runs, it names the client the listener's filter dropped:
		// the flow is listed one by one, with the rule that would have admitted it.
		pageUntil(t, browser, "the listener denial listed with its missing rule", `document.getElementById("denied-recent").textContent`, func(recent string) error {
			if want := fmt.Sprintf("the load balancer's groups %s: tcp %d from 127.0.0.3/32", strings.Join(demoLB.SecurityGroups, ", "), demoPort); !strings.Contains(recent, want) || !strings.Contains(recent, lbName) {
				return fmt.Errorf("no %q at %s in %q", want, lbName, recent)
			}
			return nil
		})
		nodePort := svc.Spec.Ports[0].NodePort
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}, Timeout: 2 * time.Second}
		if c, err := d.Dial("tcp", fmt.Sprintf("127.1.0.10:%d", nodePort)); err == nil {
			c.Close()
			t.Fatal("the denied client 127.0.0.3 reached node-a directly")
		}
		pageUntil(t, browser, "the direct attempt's missing rule", `document.getElementById("denied-rules").textContent + document.getElementById("denied-recent").textContent`, func(rules string) error {
			if want := fmt.Sprintf(": tcp %d from 127.0.0.3/32", nodePort); !strings.Contains(rules, want) {
				return fmt.Errorf("no %q in %q", want, rules)
			}
			return nil
		})
	} else {
		pageUntil(t, browser, "the reason denials to instances are not listed", `document.getElementById("denied-notes").textContent`, func(notes string) error {
			if !strings.Contains(notes, "Denied flows to instances are not listed one by one") {
				return fmt.Errorf("notes: %q", notes)
			}
			return nil
		})
	}

	png, err := chromedp.Run(browser, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if path := os.Getenv("MOAT_CONSOLE_SCREENSHOT"); path != "" {
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// pageUntil evaluates expr in the browser's page until check accepts its value.
func pageUntil[T any](t *testing.T, browser context.Context, what, expr string, check func(T) error) {
	t.Helper()
	eventually(t, time.Minute, what, func() error {
		v, err := chromedp.Run(browser, chromedp.Evaluate[T](expr))
		if err != nil {
			return err
		}
		return check(v)
	})
}

// credentialsKey is the access key of the credentials file's default profile.
func credentialsKey(t *testing.T, path string) (id, secret string) {
	t.Helper()
	keys, err := sigv4.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for id, key := range keys {
		if key.Profile == "default" {
			return id, key.Secret
		}
	}
	t.Fatalf("no default profile in %s", path)
	return "", ""
}
