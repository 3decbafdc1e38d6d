package flash

import (
	"context"
	"errors"
	"fmt"

	"github.com/btyproject/bty/internal/chunks"
	"github.com/btyproject/bty/internal/ctxio"
	"github.com/btyproject/bty/internal/exitcode"
	"github.com/btyproject/bty/internal/image"
	"github.com/btyproject/bty/internal/source"
)

// BuildIndex decodes the local image at ref and writes its chunk store
// to out, recording the image file's sha256 (bty index).
func BuildIndex(ctx context.Context, ref, out string, opts chunks.BuildOptions) (*chunks.Index, error) {
	src, err := source.OpenFile(ref)
	if err != nil {
		if errors.Is(err, source.ErrNotFound) {
			return nil, exitcode.Wrap(exitcode.Usage, err)
		}
		return nil, err
	}
	defer src.Close()
	img, err := image.Open(ctx, src, image.Options{})
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", ref, err)
	}
	defer img.Close()
	r, err := image.Reader(img)
	if err != nil {
		return nil, fmt.Errorf("decoding %s: %w", ref, err)
	}
	if opts.SourceSHA256, err = ctxio.FileSHA256(ctx, ref); err != nil {
		return nil, fmt.Errorf("hashing %s: %w", ref, err)
	}
	x, err := chunks.Build(ctx, r, out, opts)
	if err != nil {
		return nil, fmt.Errorf("indexing %s: %w", ref, err)
	}
	return x, nil
}
