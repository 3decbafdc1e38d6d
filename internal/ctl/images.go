package ctl

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/btyproject/bty/internal/client"
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
					virt = ibytes(*im.VirtualSizeBytes)
				}
				sum := "pending"
				if im.SHA256 != nil {
					sum = *im.SHA256
				} else if im.Error != "" {
					sum = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", im.Name, dash(im.Format), ibytes(im.SizeBytes), virt,
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
			const name = "images-upload"
			lf, err := u.open(args[0])
			if err != nil {
				return e.fail(name, err, map[string]any{"file": args[0]})
			}
			defer lf.f.Close()
			extra := map[string]any{"file": args[0], "name": lf.name}
			c, err := e.authClient()
			if err != nil {
				return e.fail(name, err, extra)
			}
			extra["server"] = c.Server()
			var img client.Image
			var replaced bool
			res, err := u.send(cmd.Context(), e, lf, func(ctx context.Context, body io.Reader, size int64, opt client.UploadOptions) error {
				var err error
				img, replaced, err = c.UploadImage(ctx, lf.name, body, size, opt)
				return err
			})
			if err != nil {
				return e.fail(name, e.apiErr("uploading "+args[0]+" as image "+lf.name, c, err), extra)
			}
			if e.asJSON {
				f := res.fields()
				f["ok"], f["server"], f["file"], f["image"], f["replaced"] = true, c.Server(), args[0], img, replaced
				return writeJSON(e, name, f)
			}
			fmt.Fprintln(e.stdout, res.describe("image", lf.name, c.Server(), replaced))
			if img.Error != "" {
				fmt.Fprintf(e.stderr, "bty-ctl: warning: the server cannot flash %s: %s\n", lf.name, img.Error)
			}
			return nil
		},
	}
	u.register(cmd)
	return cmd
}
