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

func newImagesCmd(e *env) *cobra.Command {
	return groupCmd(e, "images", "List the server's images or upload one",
		`The server's image catalog: the files in its image root that machines
can be flashed with (.img, .raw, .img.zst, .img.gz, .img.xz, .img.bz2,
.qcow2).`,
		newImagesListCmd(e), newImagesUploadCmd(e))
}

func newImagesListCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the images the server can flash",
		Long: `List the server's image catalog: name, format (from the file's magic
bytes), file size, decoded (virtual) size when the format records it,
modification time (local), and the file's sha256 once the server has
computed it in the background ("pending" until then). A file the server
cannot flash says why in the NOTE column.

This route needs no login.`,
		Example: `  bty-ctl images list
  bty-ctl images list --json | jq -r '.images[].name'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			const name = "images-list"
			c, err := e.anonClient()
			if err != nil {
				return e.fail(name, err, nil)
			}
			imgs, err := c.Images(cmd.Context())
			if err != nil {
				return e.fail(name, e.apiErr("listing images", c, err), map[string]any{"server": c.Server()})
			}
			if e.asJSON {
				return writeJSON(e, name, map[string]any{"server": c.Server(), "images": imgs})
			}
			if len(imgs) == 0 {
				fmt.Fprintf(e.stderr, "no images on %s yet: upload one with bty-ctl images upload FILE\n", c.Server())
				return nil
			}
			tw := newTable(e.stdout)
			fmt.Fprintln(tw, "NAME\tFORMAT\tSIZE\tVIRTUAL SIZE\tMODIFIED\tSHA256\tNOTE")
			for _, im := range imgs {
				virt := "-"
				if im.VirtualSizeBytes != nil {
					virt = human.BytesOr(*im.VirtualSizeBytes, "-")
				}
				sum := "pending"
				if im.SHA256 != nil {
					sum = *im.SHA256
				} else if im.Error != "" {
					sum = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", im.Name, dash(im.Format), human.BytesOr(im.SizeBytes, "-"), virt,
					localTime(&im.ModifiedAt), sum, dash(im.Error))
			}
			return tw.Flush()
		},
	}
}

func newImagesUploadCmd(e *env) *cobra.Command {
	var u uploadFlags
	cmd := &cobra.Command{
		Use:   "upload FILE [--name NAME] [--sha256 HEX | --checksum]",
		Short: "Upload an image to the server's catalog",
		Long: `Upload FILE into the server's image root as NAME (default: the file's
base name), replacing an image of the same name atomically.

The server checks that the bytes match the name's suffix (a raw file
called .img.zst is refused), that the image header makes sense, and,
with --sha256 HEX or --checksum (which computes the file's sha256 here
first), that the bytes arrived intact; a refused upload leaves nothing
behind.

Progress goes to stderr: a live bar on a terminal, a line every 5 s or
10 % otherwise; --no-progress turns it off. A missing FILE is exit 2;
an upload the server refuses exit 1 with the server's reason.`,
		Example: `  bty-ctl images upload ./debian-12-genericcloud-amd64.img.zst --checksum
  bty-ctl images upload ./build/disk.qcow2 --name ci-runner.qcow2
  bty-ctl images upload disk.img.zst --sha256 "$(cut -d' ' -f1 disk.img.zst.sha256)"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return u.run(cmd.Context(), e, "images-upload", args[0], "image", "image",
				func(ctx context.Context, c *client.Client, name string, body io.Reader, size int64, opt client.UploadOptions) (any, bool, error) {
					return c.UploadImage(ctx, name, body, size, opt)
				},
				func(_ uploadResult, name string, answer any) string {
					if img := answer.(api.Image); img.Error != "" {
						fmt.Fprintf(e.stderr, "bty-ctl: warning: the server cannot flash %s: %s\n", name, img.Error)
					}
					return ""
				})
		},
	}
	u.register(cmd)
	return cmd
}
