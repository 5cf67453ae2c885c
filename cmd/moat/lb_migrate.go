package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/moatlb/moat/internal/lb"
)

func newLBMigrateCommand() *cobra.Command {
	cfg := lb.Config{DataDir: lb.DefaultDataDir()}
	cmd := &cobra.Command{
		Use:   "migrate --to etcd://host:port[,host:port…][/root]",
		Short: "Copy moat lb's state and credentials from <data-dir> into an empty etcd root, for moat lb --store",
		Long: `moat lb migrate copies every record of <data-dir>/state.db, and the credentials file, into
the etcd root --to names (the value moat lb --store takes). Afterwards moat lb --store with the
same value answers as the data dir's moat lb did, with the same keys; every node writes the
credentials to its own data dir.

The data dir's moat lb must be stopped (migrate refuses a data dir in use), and the root must be
empty (migrate never mixes state). The state file is only read: to go back, start moat lb without
--store. A copy that fails part-way leaves a partial root: delete it with
etcdctl del --prefix ROOT/ and run migrate again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := lb.Migrate(cfg)
			if err != nil {
				return err
			}
			creds := "no credentials file to copy"
			if res.Credentials {
				creds = "and the credentials"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "copied %d records in %d buckets, %s, from %s to %s\nstart moat lb with --store %s\n",
				res.Records, res.Buckets, creds, cfg.DataDir, cfg.Store, cfg.Store)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "moat lb's data directory, whose state.db and credentials are copied")
	f.StringVar(&cfg.Store, "to", "", "the etcd store to copy into, as moat lb --store takes it: etcd://host:port[,host:port…][/root] (root default /moat); it must be empty")
	addStoreTLSFlags(f, &cfg)
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

// addStoreTLSFlags adds the flags of a connection to etcd over TLS, as moat lb --store has them.
func addStoreTLSFlags(f *pflag.FlagSet, cfg *lb.Config) {
	f.StringVar(&cfg.StoreCAFile, "store-cacert", "", "connect to etcd over TLS, verifying its members with this CA bundle (PEM)")
	f.StringVar(&cfg.StoreCertFile, "store-cert", "", "connect to etcd over TLS with this client certificate (PEM)")
	f.StringVar(&cfg.StoreKeyFile, "store-key", "", "the --store-cert's private key (PEM)")
}
