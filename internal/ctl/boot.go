package ctl

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/client"
	"github.com/btyproject/bty/internal/human"
)

func newBootCmd(e *env) *cobra.Command {
	return groupCmd(e, "boot", "List or upload the live env's boot artifacts",
		`The live environment's netboot artifacts that flash and tui machines
chain into (bty-live-x86_64.vmlinuz, bty-live-x86_64.initrd), built by
bty-media and served by bty-web from its boot directory.`,
		newBootListCmd(e), newBootUploadCmd(e))
}

func newBootListCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "Show which live-env artifacts the server has",
		Long: `List the live-env artifacts: the required ones, present or missing, and
any other file in the server's boot directory, with size and
modification time (local). This route needs no login.`,
		Example: `  bty-ctl boot list`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			const name = "boot-list"
			c, err := e.anonClient()
			if err != nil {
				return e.fail(name, err, nil)
			}
			files, err := c.BootFiles(cmd.Context())
			if err != nil {
				return e.fail(name, e.apiErr("listing boot artifacts", c, err), map[string]any{"server": c.Server()})
			}
			if e.asJSON {
				return writeJSON(e, name, map[string]any{"server": c.Server(), "files": files})
			}
			tw := newTable(e.stdout)
			fmt.Fprintln(tw, "NAME\tSTATUS\tSIZE\tMODIFIED")
			for _, f := range files {
				status, size := "present", human.BytesOr(f.SizeBytes, "-")
				if !f.Present {
					status, size = "MISSING", "-"
					if !f.Required {
						status = "missing"
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f.Name, status, size, localTime(f.ModifiedAt))
			}
			return tw.Flush()
		},
	}
}

func newBootUploadCmd(e *env) *cobra.Command {
	var u uploadFlags
	cmd := &cobra.Command{
		Use:   "upload FILE [--name NAME] [--sha256 HEX | --checksum]",
		Short: "Upload a live-env artifact (kernel, initrd)",
		Long: `Upload FILE into the server's boot directory as NAME (default: the
file's base name), replacing a file of the same name atomically. The
netboot path needs bty-live-x86_64.vmlinuz and bty-live-x86_64.initrd.

With --sha256 HEX or --checksum (computed here first) the server checks
the bytes arrived intact and keeps nothing otherwise. Progress goes to
stderr as for images upload. A missing FILE is exit 2.`,
		Example: `  bty-ctl boot upload out/bty-live-x86_64.vmlinuz --checksum
  bty-ctl boot upload out/initrd.img --name bty-live-x86_64.initrd`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return u.run(cmd.Context(), e, "boot-upload", args[0], "boot artifact", "boot",
				func(ctx context.Context, c *client.Client, name string, body io.Reader, size int64, opt client.UploadOptions) (any, bool, error) {
					return c.UploadBoot(ctx, name, body, size, opt)
				},
				func(res uploadResult, _ string, answer any) string {
					if res.sha256 == "" {
						return ", sha256 " + answer.(api.BootUpload).SHA256
					}
					return ""
				})
		},
	}
	u.register(cmd)
	return cmd
}
