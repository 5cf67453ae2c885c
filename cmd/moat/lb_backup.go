package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/moatlb/moat/internal/lb"
)

func newLBBackupCommand() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "backup FILE",
		Short: "Write a consistent copy of moat lb's state to FILE, while moat lb runs or not",
		Long: `moat lb backup copies <data-dir>/state.db to FILE as one consistent snapshot. While moat lb
runs it asks moat lb for the copy through <data-dir>/admin.sock, and writes go on meanwhile;
otherwise it reads the file itself. FILE appears only once the copy is whole, synced and checked
(mode 0600).

To restore: stop moat lb, copy FILE to <data-dir>/state.db, start moat lb.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := lb.Backup(ctx, dataDir, args[0])
			if err != nil {
				return err
			}
			from := "the state file (moat lb is not running)"
			if res.Online {
				from = "the running moat lb"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "backed up %d records from %s to %s\n", res.Records, from, args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", lb.DefaultDataDir(), "moat lb's data directory")
	return cmd
}
