package main

import (
	"fmt"

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
	dataDir := lb.DefaultDataDir()
	cmd := &cobra.Command{
		Use:   "add-read-only NAME",
		Short: "Add a profile with a fresh read-only key to moat lb's credentials file",
		Long: `add-read-only appends profile NAME, with a fresh key pair and moat_read_only = true, to
<data-dir>/credentials (replacing the file atomically, mode 0600; the other profiles are kept).
Its key may call read actions only (Describe*, Get*); every other action is refused with AWS's
authorization error. A running moat lb accepts the key from its next request: it re-reads the
file whenever the file changes. NAME is 1 to 64 letters, digits or +=,.@_- and must be new.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, id, err := lb.AddReadOnlyProfile(dataDir, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "added read-only profile %s (access key %s) to %s\n\ntry:\n  AWS_SHARED_CREDENTIALS_FILE=%s AWS_PROFILE=%s aws --endpoint-url <moat lb API> --region <region> ec2 describe-security-groups\n",
				args[0], id, path, path, args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", dataDir, "moat lb's data directory, which holds the credentials file")
	return cmd
}
