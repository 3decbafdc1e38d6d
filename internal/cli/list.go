package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/btyproject/bty/internal/disk"
	"github.com/btyproject/bty/internal/exitcode"
	"github.com/btyproject/bty/internal/human"
	"github.com/btyproject/bty/internal/image"
)

// DefaultImageRoot is where images live when neither --image-root nor
// BTY_IMAGE_ROOT says otherwise.
const DefaultImageRoot = "/var/lib/bty/images"

func newListCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List disks or images",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_ = cmd.Help()
			return usageErr("choose what to list: bty list disks | bty list images")
		},
	}
	cmd.AddCommand(newListDisksCmd(e), newListImagesCmd(e))
	return cmd
}

func newListDisksCmd(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "disks",
		Short: "List block devices and whether each may be flashed",
		Long: `List whole block devices from sysfs and /proc/self/mountinfo: size, type,
transport, vendor, model, serial, removable, read-only and the mount points
of the disk and its partitions. The last column says why a disk cannot be a
flash target (mounted, system disk, held by LVM/md, read-only).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			disks, err := disk.List()
			if err != nil {
				err = fmt.Errorf("listing disks: %w", err)
				if asJSON {
					return jsonError(e.stdout, "list-disks", err, nil)
				}
				return err
			}
			if asJSON {
				type row struct {
					disk.Disk
					Problems []string `json:"problems"`
				}
				rows := make([]row, 0, len(disks))
				for _, d := range disks {
					p := d.Problems()
					if p == nil {
						p = []string{}
					}
					rows = append(rows, row{Disk: d, Problems: p})
				}
				return writeJSON(e.stdout, "list-disks", map[string]any{"disks": rows})
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PATH\tSIZE\tTYPE\tTRAN\tMODEL\tSERIAL\tRM\tRO\tMOUNTPOINTS\tFLASHABLE")
			for _, d := range disks {
				flash := "yes"
				if p := d.Problems(); len(p) > 0 {
					flash = "no: " + strings.Join(p, "; ")
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Path, human.BytesOr(d.SizeBytes, "-"), d.Type,
					dash(d.Transport), dash(d.Model), dash(d.Serial), yn(d.Removable), yn(d.ReadOnly),
					dash(strings.Join(d.Mountpoints, ",")), flash)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON document")
	return cmd
}

func newListImagesCmd(e *env) *cobra.Command {
	var asJSON bool
	var root string
	cmd := &cobra.Command{
		Use:   "images",
		Short: "List the images in the image root",
		Long: `List the images directly inside the image root (not recursive): name,
format (detected from the file's magic bytes), file size and the size it
has on disk once decoded (virtual size) when the format records it.

The image root is --image-root, else $BTY_IMAGE_ROOT, else ` + DefaultImageRoot + `.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if root == "" {
				root = os.Getenv("BTY_IMAGE_ROOT")
			}
			if root == "" {
				root = DefaultImageRoot
			}
			infos, err := listImages(root)
			if err != nil {
				if asJSON {
					return jsonError(e.stdout, "list-images", err, map[string]any{"image_root": root})
				}
				return err
			}
			if asJSON {
				return writeJSON(e.stdout, "list-images", map[string]any{"image_root": root, "images": infos})
			}
			if len(infos) == 0 {
				fmt.Fprintf(e.stderr, "no images in %s\n", root)
				return nil
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tFORMAT\tSIZE\tVIRTUAL SIZE\tNOTE")
			for _, in := range infos {
				virt := "-"
				if in.VirtualSizeBytes != nil {
					virt = human.BytesOr(*in.VirtualSizeBytes, "-")
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", in.Name, dash(string(in.Format)), human.BytesOr(in.SizeBytes, "-"), virt, dash(in.Error))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON document")
	cmd.Flags().StringVar(&root, "image-root", "", "directory holding the images (default $BTY_IMAGE_ROOT or "+DefaultImageRoot+")")
	return cmd
}

func listImages(root string) ([]image.Info, error) {
	st, err := os.Stat(root)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, usageErr("image root %s does not exist: create it or pass --image-root DIR", root)
	case err != nil:
		return nil, fmt.Errorf("image root %s: %w", root, err)
	case !st.IsDir():
		return nil, usageErr("image root %s is not a directory", root)
	}
	infos, err := image.List(root)
	if err != nil {
		return nil, exitcode.Wrap(exitcode.Failed, fmt.Errorf("listing images in %s: %w", root, err))
	}
	if infos == nil {
		infos = []image.Info{}
	}
	return infos, nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yn(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
