package main

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/moatlb/moat/internal/lb"
)

func newLBCredentialsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "credentials",
		Short: "Manage the profiles of moat lb's credentials file",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newAddReadOnlyCommand())
	return cmd
}

func newAddReadOnlyCommand() *cobra.Command {
	cfg := lb.Config{DataDir: lb.DefaultDataDir()}
	cmd := &cobra.Command{
		Use:   "add-read-only NAME",
		Short: "Add a profile with a fresh read-only key to moat lb's credentials file",
		Long: `add-read-only appends profile NAME, with a fresh key pair and moat_read_only = true, to
<data-dir>/credentials (replacing the file atomically, mode 0600; the other profiles are kept).
Its key may call read actions only (Describe*, Get*); every other action is refused with AWS's
authorization error. A running moat lb accepts the key from its next request: it re-reads the
file whenever the file changes. NAME is 1 to 64 letters, digits or +=,.@_- and must be new.

With --store (the value moat lb --store takes) the profile is added to the credentials in the
etcd store instead, which every node of the deployment writes to its own <data-dir>/credentials
and accepts from then on: with --store, edit the credentials there, not in a node's file.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := filepath.Join(cfg.DataDir, lb.CredentialsFile)
			var id, where string
			var err error
			if cfg.Store != "" {
				id, err = lb.AddReadOnlyProfileToStore(cfg, args[0])
				where = "the credentials in " + cfg.Store + " (every node writes them to <data-dir>/credentials)"
			} else {
				path, id, err = lb.AddReadOnlyProfile(cfg.DataDir, args[0])
				where = path
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "added read-only profile %s (access key %s) to %s\n\ntry:\n  AWS_SHARED_CREDENTIALS_FILE=%s AWS_PROFILE=%s aws --endpoint-url <moat lb API> --region <region> ec2 describe-security-groups\n",
				args[0], id, where, path, args[0])
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "moat lb's data directory, which holds the credentials file")
	f.StringVar(&cfg.Store, "store", "", "add the profile to the credentials in this etcd store, as moat lb --store takes it: etcd://host:port[,host:port…][/root]")
	addStoreTLSFlags(f, &cfg)
	return cmd
}
