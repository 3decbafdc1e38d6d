package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/ctxio"
	"github.com/btyproject/bty/internal/image"
	"github.com/btyproject/bty/internal/source"
	"github.com/btyproject/bty/internal/store"
)

type catalogEntry struct {
	size  int64
	mtime time.Time
	entry api.Image
}

// catalog describes the image root, caching each file's inspection by
// size and mtime, and hashes files in the background (one at a time;
// hashes are cached in the store so a restart does not redo them).
type catalog struct {
	root  string
	store store.Store
	log   *slog.Logger

	mu      sync.Mutex
	entries map[string]catalogEntry
	queued  map[string]bool
	queue   chan string
	stop    chan struct{}
	wg      sync.WaitGroup
	// chunks builds the images' chunk stores (nil: off).
	chunks *chunkStores
}

func newCatalog(root string, st store.Store, log *slog.Logger) *catalog {
	c := &catalog{root: root, store: st, log: log, entries: map[string]catalogEntry{},
		queued: map[string]bool{}, queue: make(chan string, 4096), stop: make(chan struct{})}
	c.wg.Add(1)
	go c.hasher()
	return c
}

func (c *catalog) close() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	c.wg.Wait()
}

// list returns the catalog, newest inspection of every image file.
func (c *catalog) list(ctx context.Context) ([]api.Image, error) {
	dirents, err := os.ReadDir(c.root)
	if errors.Is(err, os.ErrNotExist) {
		return []api.Image{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the image root %s: %w", c.root, err)
	}
	out := []api.Image{}
	for _, d := range dirents {
		// Hidden files (uploads in progress) are not images; a name
		// that would display misleadingly is listed as unusable (get).
		if checkPathName(d.Name()) != nil {
			continue
		}
		e, ok := c.get(ctx, d.Name())
		if ok {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// get describes one file of the root; ok is false when it is not an
// image (no known suffix or magic) or not a regular file. A name that
// passes checkPathName but not checkDisplayName is an entry whose Error
// says why.
func (c *catalog) get(ctx context.Context, name string) (api.Image, bool) {
	p := filepath.Join(c.root, name)
	st, err := statInRoot(c.root, name)
	if leavesRoot(c.root, name, err) {
		return escapingImage(c.root, name), true
	}
	if err != nil || !st.Mode().IsRegular() {
		return api.Image{}, false
	}
	c.mu.Lock()
	ce, hit := c.entries[name]
	c.mu.Unlock()
	if !hit || ce.size != st.Size() || !ce.mtime.Equal(st.ModTime()) {
		e, ok := inspect(c.root, p, name, st)
		if !ok {
			return api.Image{}, false
		}
		// Such a name is refused by every route (checkName), so the file
		// can be neither assigned nor served: say so, and do not hash it.
		if err := checkDisplayName(name); err != nil {
			e.Error = err.Error() + ", then rename the file in the image root on the server (or remove it)"
		}
		ce = catalogEntry{size: st.Size(), mtime: st.ModTime(), entry: e}
	}
	if ce.entry.SHA256 == nil && ce.entry.Error == "" {
		if v, err := c.store.ImageHash(ctx, name, st.Size(), st.ModTime()); err == nil {
			if file, decoded, ok := strings.Cut(v, " "); ok {
				ce.entry.SHA256, ce.entry.DecodedSHA256 = &file, &decoded
			}
		}
		if ce.entry.SHA256 == nil {
			c.enqueue(name)
		}
	}
	c.mu.Lock()
	c.entries[name] = ce
	c.mu.Unlock()
	e := ce.entry
	if c.chunks != nil && e.SHA256 != nil && e.DecodedSHA256 != nil && e.Error == "" {
		e.Chunks = c.chunks.state(name, *e.SHA256, *e.DecodedSHA256, decodedSize(e))
	}
	return e, true
}

// decodedSize is an entry's decoded size, 0 when unknown.
func decodedSize(e api.Image) int64 {
	if e.VirtualSizeBytes != nil {
		return *e.VirtualSizeBytes
	}
	if e.Format == string(image.Raw) {
		return e.SizeBytes
	}
	return 0
}

// escapingImage is the catalog entry of a symbolic link that leads out
// of the image root: listed, so the operator sees why it is not served,
// but never read.
func escapingImage(root, name string) api.Image {
	e := api.Image{Name: name, Error: "a link out of the images directory: not served (copy or move the image into it, or link to a file inside it)"}
	if f, ok := image.FormatFromName(name); ok {
		e.Format = string(f)
	}
	if fi, err := os.Lstat(filepath.Join(root, name)); err == nil {
		e.ModifiedAt = fi.ModTime().UTC()
	}
	return e
}

func inspect(root, path, name string, st os.FileInfo) (api.Image, bool) {
	e := api.Image{Name: name, SizeBytes: st.Size(), ModifiedAt: st.ModTime().UTC()}
	fmtName, known := image.FormatFromName(name)
	src, err := openSourceInRoot(root, name)
	if err != nil {
		if !known {
			return e, false
		}
		e.Format, e.Error = string(fmtName), catalogError(err, path, name)
		return e, true
	}
	defer src.Close()
	info, err := image.Inspect(context.Background(), src)
	if !known && (info.Format == "" || info.Format == image.Raw) {
		return e, false // not an image: no suffix, no magic
	}
	// A recognised format that cannot be flashed (a VMDK, a corrupt
	// qcow2) is listed with the reason.
	e.Format = string(info.Format)
	if e.Format == "" {
		e.Format = string(fmtName)
	}
	e.VirtualSizeBytes = info.VirtualSizeBytes
	if err != nil {
		e.Error = catalogError(err, path, name)
	}
	return e, true
}

// catalogError is why an image cannot be flashed, as GET /images (an open
// route) shows it: with the image's name, not its path on the server.
func catalogError(err error, path, name string) string {
	return strings.ReplaceAll(err.Error(), path, name)
}

func (c *catalog) enqueue(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.queued[name] {
		return
	}
	select {
	case c.queue <- name:
		c.queued[name] = true
	default:
	}
}

// forget drops a name from the cache (deleted or replaced).
func (c *catalog) forget(name string) {
	c.mu.Lock()
	delete(c.entries, name)
	c.mu.Unlock()
}

func (c *catalog) hasher() {
	defer c.wg.Done()
	for {
		select {
		case <-c.stop:
			return
		case name := <-c.queue:
			c.hash(name)
			c.mu.Lock()
			delete(c.queued, name)
			c.mu.Unlock()
		}
	}
}

// hash computes and caches a file's sha256 and its decoded sha256.
func (c *catalog) hash(name string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-c.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	st, err := statInRoot(c.root, name)
	if err != nil {
		return
	}
	start := time.Now()
	fileSum, err := c.fileSHA256(ctx, name)
	if err != nil {
		c.log.Warn("hashing image", "name", name, "err", err)
		return
	}
	decoded := fileSum
	src, err := openSourceInRoot(c.root, name)
	if err != nil {
		return
	}
	img, err := image.Open(ctx, src, image.Options{Logger: c.log})
	if err == nil && img.Format() != image.Raw {
		decoded, err = hashDecoded(ctx, img)
	}
	if img != nil {
		img.Close()
	}
	src.Close()
	if err != nil {
		c.log.Warn("hashing decoded image", "name", name, "err", err)
		return
	}
	if st2, err := statInRoot(c.root, name); err != nil || st2.Size() != st.Size() || !st2.ModTime().Equal(st.ModTime()) {
		return // changed meanwhile: hashed again on the next listing
	}
	if err := c.store.SetImageHash(ctx, name, st.Size(), st.ModTime(), fileSum+" "+decoded); err != nil {
		c.log.Warn("caching image hash", "name", name, "err", err)
		return
	}
	c.mu.Lock()
	ce, ok := c.entries[name]
	ok = ok && ce.size == st.Size() && ce.mtime.Equal(st.ModTime())
	if ok {
		f, d := fileSum, decoded
		ce.entry.SHA256, ce.entry.DecodedSHA256 = &f, &d
		c.entries[name] = ce
	}
	c.mu.Unlock()
	if ok && c.chunks != nil && ce.entry.Error == "" {
		c.chunks.state(name, fileSum, decoded, decodedSize(ce.entry)) // queued now, not at the next listing
	}
	c.log.Info("image hashed", "name", name, "sha256", fileSum, "decoded_sha256", decoded, "seconds", time.Since(start).Seconds())
}

// fileSHA256 hashes the root's file name, opened inside the root.
func (c *catalog) fileSHA256(ctx context.Context, name string) (string, error) {
	f, err := openInRoot(c.root, name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return ctxio.SHA256(ctx, f)
}

func hashDecoded(ctx context.Context, img image.Image) (string, error) {
	r, err := image.Reader(img)
	if err != nil {
		return "", err
	}
	return ctxio.SHA256(ctx, r)
}

func (s *Server) handleImages(w http.ResponseWriter, r *http.Request) {
	list, err := s.catalog.list(r.Context())
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) handleImageGet(w http.ResponseWriter, r *http.Request) {
	s.serveFile(w, r, s.cfg.ImageRoot, r.PathValue("name"), "image")
}

// suffixes lists the image names PUT /images accepts.
const suffixes = ".img, .raw, .img.zst, .img.gz, .img.xz, .img.bz2, .qcow2"

func (s *Server) handleImagePut(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := checkName(name); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	want, known := image.FormatFromName(name)
	if !known {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("image name %q has no image suffix: use one of %s", name, suffixes))
		return
	}
	check := func(head []byte) error {
		if got := image.Detect(head); got != want {
			return fmt.Errorf("the upload is %s data but its name %q says %s: rename it or upload the right file", describeFormat(got), name, describeFormat(want))
		}
		return nil
	}
	u, err := receive(r, w, s.cfg.ImageRoot, s.cfg.MaxUpload, check)
	if err != nil {
		s.answerUploadError(w, r, err)
		return
	}
	// The whole header must make sense before the file is published.
	if err := inspectUpload(r.Context(), u.tmp.Name()); err != nil {
		u.abort()
		writeError(w, http.StatusBadRequest, fmt.Sprintf("the upload is not a usable %s image: %v; nothing was kept", describeFormat(want), err))
		return
	}
	replaced, err := u.commit(s.cfg.ImageRoot, name)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	s.catalog.forget(name)
	s.log.Info("image uploaded", "name", name, "bytes", u.n, "sha256", u.sum(), "client", clientAddr(r))
	entry, _ := s.catalog.get(r.Context(), name)
	code := http.StatusCreated
	if replaced {
		code = http.StatusOK
	}
	writeJSON(w, code, entry)
}

func (s *Server) handleImageDelete(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := checkName(name); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	err := s.deleteImage(name, clientAddr(r))
	if errors.Is(err, os.ErrNotExist) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no image %q", name))
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// deleteImage removes an image file (an error wrapping os.ErrNotExist
// when there is none); name must have passed checkName.
func (s *Server) deleteImage(name, client string) error {
	if err := os.Remove(filepath.Join(s.cfg.ImageRoot, name)); err != nil {
		return err
	}
	s.catalog.forget(name)
	if s.catalog.chunks != nil {
		s.catalog.chunks.requestSweep()
	}
	s.log.Info("image deleted", "name", name, "client", client)
	return nil
}

func describeFormat(f image.Format) string {
	if f == image.Raw {
		return "raw (no known magic)"
	}
	return string(f)
}

func inspectUpload(ctx context.Context, path string) error {
	src, err := source.OpenFile(path)
	if err != nil {
		return err
	}
	defer src.Close()
	_, err = image.Inspect(ctx, src)
	return err
}
