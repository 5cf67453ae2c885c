package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/spf13/cobra"

	"github.com/moatlb/moat/internal/explain"
	"github.com/moatlb/moat/internal/lb"
	"github.com/moatlb/moat/internal/up"
)

func newExplainCommand() *cobra.Command {
	var (
		q                                 explain.Query
		output, endpoint, region, dataDir string
		profile, credentialsFile          string
	)
	cmd := &cobra.Command{
		Use:   "explain --from ADDRESS --to HOST:PORT",
		Short: "Tell what moat does with a flow, and which rule or change decides it",
		Long: `moat explain asks moat lb what happens to a new flow from --from to --to, and why: through a
load balancer (--to its DNS name or address and a listener port): the listener, the rule of the
load balancer's groups that admits the client or that none does, the target the data plane picks
with its health, and the backend groups' rules between them; or straight to an instance (--to its
private address or ID and a port): the rule of its groups that admits the client, or none. A
dropped flow comes with the change that would admit it.

The verdict is the data plane's own decision, as of now. It asks the API with a SigV4-signed
request: a read-only key will do. Without --endpoint-url (or AWS_ENDPOINT_URL), it finds the local
moat lb through its endpoints file (--data-dir, else moat lb's and moat up's default) and signs
with that moat lb's default key.`,
		Example: `  moat explain --from 127.0.0.3 --to k8s-default-web-0123456789.elb.us-east-1.moat.internal:80
  moat explain --from 127.0.0.2 --to 127.1.0.10:30080 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("-o must be table or json, not %q", output)
			}
			if q.From == "" || q.To == "" {
				return errors.New("give --from and --to")
			}
			client, err := explainClient(cmd, endpoint, region, dataDir, profile, credentialsFile)
			if err != nil {
				return err
			}
			a, err := client.Ask(cmd.Context(), q)
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(a)
			}
			return a.WriteText(cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&q.From, "from", "", "the client's address")
	f.StringVar(&q.To, "to", "", "HOST:PORT: a load balancer's DNS name or address and a listener port, or an instance's private address or ID and a port")
	f.StringVar(&q.Protocol, "protocol", "tcp", "tcp or udp")
	f.StringVarP(&output, "output", "o", "table", "table or json")
	f.StringVar(&endpoint, "endpoint-url", "", "moat lb's API URL (default: AWS_ENDPOINT_URL, else the local moat lb's)")
	f.StringVar(&region, "region", "", "the region moat lb serves (default: the AWS configuration's, else us-east-1)")
	f.StringVar(&profile, "profile", "", "profile of the credentials file to sign with (with --endpoint-url)")
	f.StringVar(&credentialsFile, "credentials-file", "", "AWS shared-credentials file (with --endpoint-url)")
	f.StringVar(&dataDir, "data-dir", "", "the local moat lb's data directory (default: moat lb's, else moat up's)")
	return cmd
}

// explainClient is where and as whom to ask: the endpoint and key given (flags, then the AWS
// configuration), or the local moat lb's own.
func explainClient(cmd *cobra.Command, endpoint, region, dataDir, profile, credentialsFile string) (explain.Client, error) {
	endpoint = cmp.Or(endpoint, os.Getenv("AWS_ENDPOINT_URL"))
	if endpoint != "" {
		var opts []func(*config.LoadOptions) error
		if profile != "" {
			opts = append(opts, config.WithSharedConfigProfile(profile))
		}
		if credentialsFile != "" {
			opts = append(opts, config.WithSharedCredentialsFiles([]string{credentialsFile}))
		}
		cfg, err := config.LoadDefaultConfig(cmd.Context(), opts...)
		if err != nil {
			return explain.Client{}, fmt.Errorf("load the AWS configuration: %w", err)
		}
		return explain.Client{Endpoint: endpoint, Region: cmp.Or(region, cfg.Region, "us-east-1"), Credentials: cfg.Credentials}, nil
	}
	dirs := []string{dataDir}
	if dataDir == "" {
		dirs = []string{lb.DefaultDataDir(), filepath.Join(up.DefaultStateDir(), "lb")}
	}
	for _, dir := range dirs {
		eps, err := lb.ReadEndpoints(dir)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return explain.Client{}, err
		}
		sc, err := config.LoadSharedConfigProfile(cmd.Context(), cmp.Or(profile, "default"), func(o *config.LoadSharedConfigOptions) {
			o.CredentialsFiles = []string{eps.CredentialsFile}
			o.ConfigFiles = []string{}
		})
		if err != nil {
			return explain.Client{}, fmt.Errorf("credentials %s: %w", eps.CredentialsFile, err)
		}
		return explain.Client{Endpoint: eps.API, Region: cmp.Or(region, "us-east-1"),
			Credentials: aws.NewCredentialsCache(credentials.StaticCredentialsProvider{Value: sc.Credentials})}, nil
	}
	return explain.Client{}, fmt.Errorf("no running moat lb found (no %s in %v): give --endpoint-url, or --data-dir", lb.EndpointsFile, dirs)
}
