package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/btyproject/bty/internal/exitcode"
	"github.com/btyproject/bty/internal/human"
	"github.com/btyproject/bty/internal/image"
	"github.com/btyproject/bty/internal/source"
)

func newInspectCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inspect",
		Short: "Inspect an image",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_ = cmd.Help()
			return usageErr("choose what to inspect: bty inspect image PATH")
		},
	}
	cmd.AddCommand(newInspectImageCmd(e))
	return cmd
}

func newInspectImageCmd(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "image PATH|URL",
		Short: "Show an image's format, sizes and format details",
		Long: `Show an image's format (from its magic bytes), file size, the size it
has once decoded (virtual size) and format details: for qcow2 the version,
cluster size, compression, backing file and allocated bytes; for zstd the
frame content size when present.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := args[0]
			info, err := inspect(cmd, ref)
			if err != nil {
				// What was recognised is shown with the reason the image
				// cannot be used (a corrupt qcow2, a VMDK, ...).
				if asJSON {
					extra := map[string]any{"path": ref}
					if info.Format != "" {
						extra["format"] = info.Format
					}
					return jsonError(e.stdout, "inspect-image", err, extra)
				}
				if info.Format != "" {
					fmt.Fprintf(e.stdout, "path:          %s\n", ref)
					fmt.Fprintf(e.stdout, "format:        %s (not flashable)\n", info.Format)
					fmt.Fprintf(e.stdout, "size:          %s (%d bytes)\n", human.BytesOr(info.SizeBytes, "-"), info.SizeBytes)
				}
				return err
			}
			if asJSON {
				return writeJSON(e.stdout, "inspect-image", map[string]any{
					"path": info.Path, "format": info.Format, "size_bytes": info.SizeBytes,
					"virtual_size_bytes": info.VirtualSizeBytes, "detail": info.Detail,
				})
			}
			fmt.Fprintf(e.stdout, "path:          %s\n", info.Path)
			fmt.Fprintf(e.stdout, "format:        %s\n", info.Format)
			fmt.Fprintf(e.stdout, "size:          %s (%d bytes)\n", human.BytesOr(info.SizeBytes, "-"), info.SizeBytes)
			if info.VirtualSizeBytes != nil {
				fmt.Fprintf(e.stdout, "virtual size:  %s (%d bytes)\n", human.BytesOr(*info.VirtualSizeBytes, "-"), *info.VirtualSizeBytes)
			} else {
				fmt.Fprintf(e.stdout, "virtual size:  unknown until decoded\n")
			}
			if info.Detail != nil {
				// Print detail fields in a stable order through JSON.
				b, _ := json.Marshal(info.Detail)
				var m map[string]any
				dec := json.NewDecoder(bytes.NewReader(b))
				dec.UseNumber() // sizes print as integers, not 2.68e+08
				if dec.Decode(&m) == nil && len(m) > 0 {
					fmt.Fprintf(e.stdout, "detail:\n")
					for _, k := range sortedKeys(m) {
						fmt.Fprintf(e.stdout, "  %-20s %v\n", k+":", m[k])
					}
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON document")
	return cmd
}

func inspect(cmd *cobra.Command, ref string) (image.Info, error) {
	ctx := cmd.Context()
	src, err := source.Open(ctx, ref, source.Options{})
	if err != nil {
		if errors.Is(err, source.ErrNotFound) && !source.IsURL(ref) {
			return image.Info{}, exitcode.Wrap(exitcode.Usage, err)
		}
		return image.Info{}, err
	}
	defer src.Close()
	info, err := image.Inspect(ctx, src)
	if err != nil {
		return info, fmt.Errorf("inspecting %s: %w", ref, err)
	}
	return info, nil
}
