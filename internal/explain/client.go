package explain

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Client asks a moat lb's API: a JSON 1.1 request (target MoatService.Explain) signed with
// SigV4 for the service "moat", so any key of moat lb's credentials file will do, read-only
// ones too.
type Client struct {
	Endpoint    string // moat lb's API URL
	Region      string
	Credentials aws.CredentialsProvider
	HTTP        *http.Client // nil: a client with a 30 s timeout
}

// Ask sends q and returns moat lb's answer, or its error as "Code: message".
func (c Client) Ask(ctx context.Context, q Query) (Answer, error) {
	body, err := json.Marshal(q)
	if err != nil {
		return Answer{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(c.Endpoint, "/")+"/", bytes.NewReader(body))
	if err != nil {
		return Answer{}, err
	}
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "MoatService.Explain")
	creds, err := c.Credentials.Retrieve(ctx)
	if err != nil {
		return Answer{}, fmt.Errorf("credentials: %w", err)
	}
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), "moat", c.Region, time.Now()); err != nil {
		return Answer{}, fmt.Errorf("sign: %w", err)
	}
	client := c.HTTP
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := client.Do(req)
	if err != nil {
		return Answer{}, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return Answer{}, err
	}
	if resp.StatusCode != http.StatusOK {
		var fault struct {
			Type    string `json:"__type"`
			Message string `json:"message"`
		}
		if json.Unmarshal(out, &fault) != nil || fault.Type == "" {
			return Answer{}, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(out))
		}
		return Answer{}, fmt.Errorf("%s: %s", fault.Type, fault.Message)
	}
	var a Answer
	if err := json.Unmarshal(out, &a); err != nil {
		return Answer{}, fmt.Errorf("read the answer: %w", err)
	}
	return a, nil
}

// WriteText writes the answer as a table per path: each stage, its result and why, then the
// fix.
func (a Answer) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i, p := range a.Paths {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		fmt.Fprintf(tw, "%s %s → %s (%s): %s\n", a.Query.Protocol, a.Query.From, a.Query.To, p.To, strings.ToUpper(p.Verdict))
		fmt.Fprintln(tw, "STAGE\tRESULT\tDETAIL")
		for _, s := range p.Steps {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Stage, s.Result, s.Detail)
		}
		if p.Fix != "" {
			fmt.Fprintf(tw, "to admit it:\n  %s\n", strings.ReplaceAll(p.Fix, "\n", "\n  "))
		}
	}
	return tw.Flush()
}
