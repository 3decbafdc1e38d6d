package server

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/btyproject/bty/internal/source"
)

// Files served from the image root and the boot directory are opened
// through os.Root: a name that resolves outside its directory (a
// symbolic link to /var/lib/bty/state.db, an absolute link) is refused,
// while a relative link to another file inside still works.

// openInRoot opens dir/name for reading, only if it resolves inside dir.
func openInRoot(dir, name string) (*os.File, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return root.Open(name)
}

// statInRoot is os.Stat of dir/name, only if it resolves inside dir.
func statInRoot(dir, name string) (os.FileInfo, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return root.Stat(name)
}

// leavesRoot reports whether err, from openInRoot or statInRoot of
// dir/name, is the refusal of a symbolic link that leads out of dir
// (os.Root's error for that is not exported: a symlink that fails for
// another reason than not existing is taken as one).
func leavesRoot(dir, name string, err error) bool {
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return false
	}
	fi, lerr := os.Lstat(filepath.Join(dir, name))
	return lerr == nil && fi.Mode()&fs.ModeSymlink != 0
}

// openSourceInRoot opens dir/name as an image source (source.OpenFile
// takes a path), checking it is the very file os.Root resolves inside
// dir, so a link swapped in between cannot lead out.
func openSourceInRoot(dir, name string) (source.Source, error) {
	f, err := openInRoot(dir, name)
	if err != nil {
		return nil, err
	}
	want, err := f.Stat()
	f.Close()
	if err != nil {
		return nil, err
	}
	src, err := source.OpenFile(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	if fl, ok := src.(source.Filer); ok {
		if got, err := fl.File().Stat(); err == nil && os.SameFile(got, want) {
			return src, nil
		}
	}
	src.Close()
	return nil, fmt.Errorf("opening %s: it changed while being opened; try again", name)
}

// kindDir names the directory serveFile's kind comes from.
func kindDir(kind string) string {
	if kind == "image" {
		return "images"
	}
	return kind
}
