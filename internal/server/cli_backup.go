package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/btyproject/bty/internal/exitcode"
	"github.com/btyproject/bty/internal/store/sqlitestore"
)

// openExistingState opens the state database of --state-dir (or
// BTY_STATE_DIR) for backup and check, which must never create one.
// A running bty-web may have it open: WAL lets both read and write.
func openExistingState(ctx context.Context, cmd *cobra.Command, stateDir string, stderr io.Writer) (*sqlitestore.SQLite, error) {
	cfg, err := ConfigFromEnv(nil)
	if err != nil {
		return nil, exitcode.Wrap(exitcode.Usage, err)
	}
	if cmd.Flags().Changed("state-dir") {
		cfg.StateDir = stateDir
	}
	if _, err := os.Stat(cfg.DBPath()); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no state database at %s (set BTY_STATE_DIR or --state-dir to bty-web's state directory)", cfg.DBPath())
	}
	return sqlitestore.Open(ctx, cfg.DBPath(), newLogger(stderr))
}

func newBackupCmd(stdout, stderr io.Writer) *cobra.Command {
	var stateDir string
	var force bool
	cmd := &cobra.Command{
		Use:   "backup FILE",
		Short: "Write a consistent copy of the state database to FILE (also while bty-web runs)",
		Long: `Write a consistent copy of the state database (SQLite's VACUUM INTO)
to FILE, also while bty-web serves from it: the copy holds every write
committed before the backup started. FILE gets mode 0600 and must not
exist (unless --force). Restore: stop bty-web, then
  rm -f $BTY_STATE_DIR/state.db-wal $BTY_STATE_DIR/state.db-shm
  cp FILE $BTY_STATE_DIR/state.db
The BMC passwords in the copy are sealed with $BTY_STATE_DIR/secret.key,
which the copy does not include: keep that file too, apart from it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			st, err := openExistingState(ctx, cmd, stateDir, stderr)
			if err != nil {
				return err
			}
			defer st.Close()
			if err := st.Backup(ctx, args[0], force); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "backup of %s written to %s\n", st.Path(), args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "replace FILE if it exists")
	cmd.Flags().StringVar(&stateDir, "state-dir", "", "state directory (overrides BTY_STATE_DIR)")
	return cmd
}

func newCheckCmd(stdout, stderr io.Writer) *cobra.Command {
	var stateDir string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Run SQLite's integrity_check on the state database (also while bty-web runs)",
		Long: `Run SQLite's PRAGMA integrity_check on the state database: every page,
b-tree and index entry (bty-web runs the quicker quick_check at every
start and refuses a damaged database). Prints "ok" and exits 0, or lists
the problems and exits 1: then stop bty-web and restore a backup.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			st, err := openExistingState(ctx, cmd, stateDir, stderr)
			if err != nil {
				return err
			}
			defer st.Close()
			problems, err := st.IntegrityCheck(ctx)
			if err != nil {
				return fmt.Errorf("%w; the database is damaged or unreadable: stop bty-web and restore a backup", err)
			}
			if len(problems) > 0 {
				for _, p := range problems {
					fmt.Fprintln(stdout, p)
				}
				return fmt.Errorf("state database %s failed SQLite's integrity_check (%d problem(s) above); stop bty-web and restore a backup", st.Path(), len(problems))
			}
			fmt.Fprintf(stdout, "ok: %s passed SQLite's integrity_check\n", st.Path())
			return nil
		},
	}
	cmd.Flags().StringVar(&stateDir, "state-dir", "", "state directory (overrides BTY_STATE_DIR)")
	return cmd
}
