// Package cli implements the bty command line. Run is the whole program;
// cmd/bty/main.go only wires signals and the exit code, so tests drive the
// CLI in-process exactly as a user would.
package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/btyproject/bty/internal/cmdrun"
	"github.com/btyproject/bty/internal/version"
)

// env bundles what every subcommand needs from the outside world.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
}

// Run executes bty with args (without the program name) and returns the
// process exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr,
		log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	root := newRoot(e)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	return cmdrun.Execute(ctx, root, args, nil)
}

func newRoot(e *env) *cobra.Command {
	var showVersion, asJSON bool
	root := &cobra.Command{
		Use:   "bty",
		Short: "Flash pre-built system images onto disks, fast and bit-identical",
		Long: `bty puts a pre-built system image onto a target disk, fast and repeatably.

Images (.img, .img.zst, .img.gz, .img.xz, .img.bz2, .qcow2) are decoded
natively; only data is written, zero ranges are zeroed cheaply, and the
target ends up bit-identical to the decoded image.

Exit codes: 0 success, 1 operation failed, 2 misuse, 3 root required,
4 required external tool missing, 5 target changed between check and write.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if showVersion {
				if asJSON {
					return writeJSON(e.stdout, "version", map[string]any{"version": version.Version, "build": version.String()})
				}
				fmt.Fprintf(e.stdout, "bty %s\n", version.String())
				return nil
			}
			return cmd.Help()
		},
	}
	root.Flags().BoolVar(&showVersion, "version", false, "print the version and exit")
	root.Flags().BoolVar(&asJSON, "json", false, "with --version: print a JSON document")
	root.AddCommand(newListCmd(e), newInspectCmd(e), newFlashCmd(e), newIndexCmd(e))
	root.SetFlagErrorFunc(cmdrun.SeeHelp)
	return root
}
