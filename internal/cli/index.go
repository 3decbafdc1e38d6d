package cli

import (
	"fmt"
	"runtime"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/btyproject/bty/internal/chunks"
	"github.com/btyproject/bty/internal/flash"
	"github.com/btyproject/bty/internal/human"
	"github.com/btyproject/bty/internal/source"
)

func newIndexCmd(e *env) *cobra.Command {
	var out, chunkSize string
	var asJSON, quiet bool
	cmd := &cobra.Command{
		Use:   "index IMAGE",
		Short: "Build an image's chunk store, for delta and parallel flashes",
		Long: `Build the chunk store of a local image: its decoded bytes cut into
fixed-size chunks aligned to disk offsets, each with its sha256 and each
compressed on its own (see docs/reference.md, "Chunk stores"). It is
written to IMAGE.btyc (or --output), where bty flash --delta looks for it.

A delta flash reads the target's chunks, hashes them, and fetches and
writes only those that differ from the image: a reflash after a CI job
writes what the job changed. The store records the image file's sha256;
after the image changes, run bty index again (a stale store is not used).
bty-web builds a store for every image of its catalog by itself.`,
		Example: `  bty index debian.img.zst
  sudo bty flash --image debian.img.zst --target /dev/sdb --yes --delta`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := args[0]
			if source.IsURL(ref) {
				return usageErr("bty index builds the store of a local image; bty-web builds the stores of its images itself")
			}
			cs, err := humanize.ParseBytes(chunkSize)
			if err != nil || cs < chunks.MinChunkSize || cs > chunks.MaxChunkSize || cs&(cs-1) != 0 {
				return usageErr("--chunk-size must be a power of two between 64KiB and 64MiB, not %q", chunkSize)
			}
			if out == "" {
				out = ref + ".btyc"
			}
			x, took, err := buildIndex(cmd, e, ref, out, int64(cs), quiet || asJSON)
			if err != nil {
				if asJSON {
					return jsonError(e.stdout, "index", err, map[string]any{"image": ref})
				}
				return err
			}
			zero, packed := 0, int64(0)
			for _, c := range x.Chunks {
				if c.Zero {
					zero++
				}
				packed += c.Len
			}
			if asJSON {
				return writeJSON(e.stdout, "index", map[string]any{
					"ok": true, "image": ref, "store": out, "chunk_size": x.ChunkSize, "chunks": len(x.Chunks),
					"zero_chunks": zero, "image_size_bytes": x.ImageSize, "store_size_bytes": x.FileSize,
					"sha256": x.SHA256, "source_sha256": x.SourceSHA256, "elapsed_seconds": took.Seconds(),
				})
			}
			fmt.Fprintf(e.stdout, "store:     %s\n", out)
			fmt.Fprintf(e.stdout, "chunks:    %d of %s (%d zero)\n", len(x.Chunks), human.Bytes(x.ChunkSize), zero)
			fmt.Fprintf(e.stdout, "image:     %s decoded, sha256 %s\n", human.Bytes(x.ImageSize), x.SHA256)
			fmt.Fprintf(e.stdout, "size:      %s (%s of packed chunks)\n", human.Bytes(x.FileSize), human.Bytes(packed))
			fmt.Fprintf(e.stdout, "took:      %s\n", took.Round(100*time.Millisecond))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "output", "", "where to write the store (default IMAGE.btyc)")
	f.StringVar(&chunkSize, "chunk-size", "1MiB", "chunk size: a power of two, 64KiB-64MiB")
	f.BoolVar(&asJSON, "json", false, "print one JSON document")
	f.BoolVar(&quiet, "quiet", false, "no progress on stderr")
	return cmd
}

// buildIndex decodes the image and writes its store to out, with
// progress on stderr.
func buildIndex(cmd *cobra.Command, e *env, ref, out string, cs int64, quiet bool) (*chunks.Index, time.Duration, error) {
	start := time.Now()
	last := time.Now()
	progress := func(done int64) {
		if quiet || time.Since(last) < 2*time.Second {
			return
		}
		last = time.Now()
		fmt.Fprintf(e.stderr, "indexing %s: %s decoded\n", ref, human.Bytes(done))
	}
	x, err := flash.BuildIndex(cmd.Context(), ref, out, chunks.BuildOptions{ChunkSize: cs, Workers: runtime.NumCPU(), Progress: progress})
	if err != nil {
		return nil, 0, err
	}
	return x, time.Since(start), nil
}
