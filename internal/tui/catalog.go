package tui

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/btyproject/bty/internal/client"
	"github.com/btyproject/bty/internal/image"
)

// Image is one entry of a catalog, local or remote.
type Image struct {
	Name   string
	Format string
	Size   int64
	// Virtual is the decoded size (nil when unknown before decoding).
	Virtual *int64
	// Ref is what the engine opens: a path or a URL.
	Ref string
	// SHA256 is the decoded image's hash when the catalog knows it; the
	// flash then checks it.
	SHA256 string
	// Err says why the image cannot be flashed.
	Err string
}

// Catalog lists the images to choose from.
type Catalog interface {
	// Describe names the catalog for the title line.
	Describe() string
	List(ctx context.Context) ([]Image, error)
}

// LocalCatalog lists an image root (non-recursive).
type LocalCatalog struct{ Root string }

// Describe implements Catalog.
func (c LocalCatalog) Describe() string { return "local " + c.Root }

// List implements Catalog.
func (c LocalCatalog) List(ctx context.Context) ([]Image, error) {
	st, err := os.Stat(c.Root)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("the image root %s does not exist: create it and copy images there, or start with --image-root DIR", c.Root)
	case err != nil:
		return nil, fmt.Errorf("image root %s: %w", c.Root, err)
	case !st.IsDir():
		return nil, fmt.Errorf("the image root %s is not a directory", c.Root)
	}
	infos, err := image.List(c.Root)
	if err != nil {
		return nil, fmt.Errorf("listing images in %s: %w", c.Root, err)
	}
	out := make([]Image, 0, len(infos))
	for _, in := range infos {
		// The row names the file already: drop its path from the reason.
		reason := strings.ReplaceAll(in.Error, in.Path+": ", "")
		out = append(out, Image{Name: in.Name, Format: string(in.Format), Size: in.SizeBytes, Virtual: in.VirtualSizeBytes, Ref: in.Path, Err: reason})
	}
	return out, nil
}

// RemoteCatalog lists a bty-web server's images (GET /images); the
// chosen image streams from GET /images/NAME.
type RemoteCatalog struct{ Client *client.Client }

// Describe implements Catalog.
func (c RemoteCatalog) Describe() string { return "server " + c.Client.Server() }

// List implements Catalog.
func (c RemoteCatalog) List(ctx context.Context) ([]Image, error) {
	imgs, err := c.Client.Images(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing the server's images: %w", err)
	}
	out := make([]Image, 0, len(imgs))
	for _, in := range imgs {
		im := Image{Name: in.Name, Format: in.Format, Size: in.SizeBytes, Virtual: in.VirtualSizeBytes, Ref: c.Client.ImageURL(in.Name), Err: in.Error}
		if in.DecodedSHA256 != nil {
			im.SHA256 = *in.DecodedSHA256
		}
		out = append(out, im)
	}
	return out, nil
}
