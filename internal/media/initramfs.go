package media

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
)

// File is one entry of an initramfs.
type File struct {
	Path   string      // inside the archive, no leading '/': "bin/bty"
	Mode   fs.FileMode // permissions plus fs.ModeDir or fs.ModeSymlink; 0 perms on a Source file: the source's
	Data   []byte      // contents of a regular file, or
	Source string      // host file to copy, or
	Link   string      // target of a symlink (Mode has fs.ModeSymlink)
}

// initramfsLevel is the zstd level of initramfs images: the kernel
// decompresses any level at the same speed, and "better" halves the
// build time of "best" for a few percent more bytes.
var initramfsLevel = zstd.SpeedBetterCompression

// WriteInitramfs writes files as a zstd-compressed newc cpio archive, the
// format the Linux kernel unpacks into its initial root filesystem.
//
// The output depends only on the inputs: entries are sorted by path,
// directories the paths need but files lacks are added (0755), inode
// numbers count up in that order, owners are 0, and every mtime is
// $SOURCE_DATE_EPOCH (0 when unset).
//
// The cpio writer is hand-written: newc is a few lines of hex headers,
// and no well-kept Go library writes it (with symlinks, reproducibly)
// without pulling in a larger toolkit.
func WriteInitramfs(w io.Writer, files []File) error {
	epoch, err := sourceDateEpoch()
	if err != nil {
		return err
	}
	zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(initramfsLevel), zstd.WithEncoderCRC(true))
	if err != nil {
		return fmt.Errorf("starting the zstd encoder: %w", err)
	}
	bw := bufio.NewWriterSize(zw, 1<<20)
	if err := writeCpio(bw, files, epoch.Unix()); err != nil {
		zw.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		zw.Close()
		return fmt.Errorf("writing the initramfs: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("writing the initramfs: %w", err)
	}
	return nil
}

// sourceDateEpoch is $SOURCE_DATE_EPOCH (reproducible-builds.org), or the
// zero time (Unix 0) when unset.
func sourceDateEpoch() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > 0xffffffff {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a number of seconds since 1970: fix or unset it", s)
	}
	return time.Unix(n, 0).UTC(), nil
}

// newc mode bits.
const (
	cpioDir  = 0o040000
	cpioReg  = 0o100000
	cpioLink = 0o120000
)

func cpioMode(m fs.FileMode) uint32 {
	v := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		v |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		v |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		v |= 0o1000
	}
	switch {
	case m.IsDir():
		v |= cpioDir
	case m&fs.ModeSymlink != 0:
		v |= cpioLink
	default:
		v |= cpioReg
	}
	return v
}

// checkFiles cleans and validates the entries and adds missing parents.
func checkFiles(files []File) ([]File, error) {
	byPath := make(map[string]File, len(files))
	for _, f := range files {
		p := f.Path
		if p == "" || strings.HasPrefix(p, "/") || path.Clean(p) != p || p == "." || p == ".." || strings.HasPrefix(p, "../") {
			return nil, fmt.Errorf("initramfs entry %q: want a clean relative path like bin/bty", p)
		}
		if _, dup := byPath[p]; dup {
			return nil, fmt.Errorf("initramfs entry %s given twice", p)
		}
		sources := 0
		for _, set := range []bool{f.Data != nil, f.Source != "", f.Link != ""} {
			if set {
				sources++
			}
		}
		switch {
		case f.Mode.IsDir():
			if sources != 0 {
				return nil, fmt.Errorf("initramfs directory %s has contents: give a directory no Data, Source or Link", p)
			}
		case f.Mode&fs.ModeSymlink != 0:
			if f.Link == "" || sources != 1 {
				return nil, fmt.Errorf("initramfs symlink %s: give its target in Link, and nothing else", p)
			}
		case f.Mode.Type() != 0:
			return nil, fmt.Errorf("initramfs entry %s: only files, directories and symlinks are supported, not %s", p, f.Mode.Type())
		default:
			if f.Link != "" || sources > 1 {
				return nil, fmt.Errorf("initramfs file %s: give one of Data and Source (a Link needs fs.ModeSymlink)", p)
			}
		}
		byPath[p] = f
	}
	for p := range byPath {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if f, ok := byPath[d]; ok {
				if !f.Mode.IsDir() {
					return nil, fmt.Errorf("initramfs entry %s needs %s to be a directory, but it is given as a file", p, d)
				}
				continue
			}
			byPath[d] = File{Path: d, Mode: fs.ModeDir | 0o755}
		}
	}
	out := make([]File, 0, len(byPath))
	for _, f := range byPath {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// writeCpio writes the newc archive, trailer included.
func writeCpio(w io.Writer, files []File, mtime int64) error {
	entries, err := checkFiles(files)
	if err != nil {
		return err
	}
	var off int64
	pad := func() error {
		if n := (4 - off%4) % 4; n > 0 {
			k, err := w.Write(make([]byte, n))
			off += int64(k)
			return err
		}
		return nil
	}
	header := func(ino int, name string, mode uint32, nlink int, size int64) error {
		if size > 0xffffffff {
			return fmt.Errorf("initramfs entry %s is %d bytes: newc cpio holds at most 4 GiB per file", name, size)
		}
		h := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, mode, 0, 0, nlink, uint32(mtime), size, 0, 0, 0, 0, len(name)+1, 0)
		k, err := io.WriteString(w, h+name+"\x00")
		off += int64(k)
		if err != nil {
			return err
		}
		return pad()
	}
	for i, f := range entries {
		ino := i + 1
		mode := f.Mode
		switch {
		case mode.IsDir():
			if err := header(ino, f.Path, cpioMode(mode), 2, 0); err != nil {
				return werr(err)
			}
		case mode&fs.ModeSymlink != 0:
			if err := header(ino, f.Path, cpioMode(mode|0o777), 1, int64(len(f.Link))); err != nil {
				return werr(err)
			}
			k, err := io.WriteString(w, f.Link)
			off += int64(k)
			if err != nil {
				return werr(err)
			}
		case f.Source != "":
			if err := copySource(w, f, ino, header, &off); err != nil {
				return err
			}
		default:
			if err := header(ino, f.Path, cpioMode(mode), 1, int64(len(f.Data))); err != nil {
				return werr(err)
			}
			k, err := w.Write(f.Data)
			off += int64(k)
			if err != nil {
				return werr(err)
			}
		}
		if err := pad(); err != nil {
			return werr(err)
		}
	}
	if err := header(len(entries)+1, "TRAILER!!!", 0, 1, 0); err != nil {
		return werr(err)
	}
	return nil
}

func copySource(w io.Writer, f File, ino int, header func(int, string, uint32, int, int64) error, off *int64) error {
	src, err := os.Open(f.Source)
	if err != nil {
		return fmt.Errorf("adding %s to the initramfs: %w", f.Path, err)
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return fmt.Errorf("adding %s to the initramfs: %w", f.Path, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("adding %s to the initramfs: %s is not a regular file", f.Path, f.Source)
	}
	mode := f.Mode
	if mode.Perm() == 0 {
		mode |= st.Mode().Perm()
	}
	if err := header(ino, f.Path, cpioMode(mode), 1, st.Size()); err != nil {
		return werr(err)
	}
	n, err := io.Copy(w, io.LimitReader(src, st.Size()))
	*off += n
	if err != nil {
		return fmt.Errorf("adding %s (%s) to the initramfs: %w", f.Path, f.Source, err)
	}
	if n != st.Size() {
		return fmt.Errorf("adding %s to the initramfs: %s shrank from %d to %d bytes while being read; run again", f.Path, f.Source, st.Size(), n)
	}
	return nil
}

func werr(err error) error {
	if strings.HasPrefix(err.Error(), "initramfs entry") {
		return err
	}
	return fmt.Errorf("writing the initramfs: %w", err)
}
