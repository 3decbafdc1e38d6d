package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/chunks"
	"github.com/btyproject/bty/internal/human"
	"github.com/btyproject/bty/internal/image"
)

// Chunk store states (api.ChunkStore.State).
const (
	chunkQueued   = "queued"
	chunkBuilding = "building"
	chunkReady    = "ready"
	chunkFailed   = "failed"
)

// chunkStores builds the catalog's chunk stores (internal/chunks) in
// the background, one at a time, and keeps them in dir as
// <file-sha256>.btyc: keyed by the image file's sha256, so a replaced
// image gets a new store and two names of one file share one. Stores no
// catalog image has any more are removed by sweep, which runs after
// every build and when an image is deleted.
type chunkStores struct {
	dir  string
	root string
	cat  *catalog
	log  *slog.Logger
	m    *metrics

	mu     sync.Mutex
	states map[string]*chunkState // by file sha256
	queue  chan chunkJob
	sweepc chan struct{}
}

type chunkState struct {
	api.ChunkStore
	decoded string
	// modTime is the ready store file's, for its ETag.
	modTime time.Time
}

type chunkJob struct {
	name, file, decoded string
	total               int64
}

// chunkWorkers compress a store's chunks: bty-web also serves flashes,
// so a build takes at most two cores.
func chunkWorkers() int { return min(2, max(1, runtime.NumCPU()/2)) }

// startChunks turns chunk stores on: dir is created, the catalog is
// listed once (existing stores are checked, not rebuilt) and the
// builder runs until close.
func (c *catalog) startChunks(dir string, m *metrics) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating the chunk store directory %s: %w (set BTY_CHUNK_STORES=off to run without chunk stores)", dir, err)
	}
	cs := &chunkStores{dir: dir, root: c.root, cat: c, log: c.log, m: m,
		states: map[string]*chunkState{}, queue: make(chan chunkJob, 4096), sweepc: make(chan struct{}, 1)}
	c.chunks = cs
	c.wg.Add(1)
	go cs.run()
	return nil
}

// state is the chunk store of the image name whose sums are file and
// decoded; one not known yet is queued. total is the decoded size (0:
// unknown).
func (cs *chunkStores) state(name, file, decoded string, total int64) *api.ChunkStore {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	st, ok := cs.states[file]
	if !ok {
		select {
		case cs.queue <- chunkJob{name: name, file: file, decoded: decoded, total: total}:
		default:
			// Full: asked again at the next listing.
			return &api.ChunkStore{State: chunkQueued, TotalBytes: total}
		}
		st = &chunkState{ChunkStore: api.ChunkStore{State: chunkQueued, TotalBytes: total}, decoded: decoded}
		cs.states[file] = st
	}
	out := st.ChunkStore
	return &out
}

// open opens the ready store of the image file whose sha256 is file.
func (cs *chunkStores) open(file string) (*os.File, time.Time, error) {
	cs.mu.Lock()
	st, ok := cs.states[file]
	ready := ok && st.State == chunkReady
	var mt time.Time
	if ready {
		mt = st.modTime
	}
	cs.mu.Unlock()
	if !ready {
		return nil, mt, os.ErrNotExist
	}
	f, err := os.Open(cs.path(file))
	return f, mt, err
}

func (cs *chunkStores) path(file string) string { return filepath.Join(cs.dir, file+".btyc") }

// requestSweep asks the builder to sweep (an image was deleted).
func (cs *chunkStores) requestSweep() {
	select {
	case cs.sweepc <- struct{}{}:
	default:
	}
}

func (cs *chunkStores) run() {
	defer cs.cat.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-cs.cat.stop
		cancel()
	}()
	// Existing stores are checked (and new images hashed) at start, not
	// at the first listing.
	if _, err := cs.cat.list(ctx); err != nil {
		cs.log.Warn("listing images for their chunk stores", "err", err)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-cs.queue:
			cs.build(ctx, j)
			if len(cs.queue) == 0 {
				cs.sweep(ctx)
			}
		case <-cs.sweepc:
			cs.sweep(ctx)
		}
	}
}

func (cs *chunkStores) set(file string, fn func(*chunkState)) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if st, ok := cs.states[file]; ok {
		fn(st)
	}
	cs.countReadyLocked()
}

// countReadyLocked sets the ready stores gauge; cs.mu is held.
func (cs *chunkStores) countReadyLocked() {
	n := 0
	for _, st := range cs.states {
		if st.State == chunkReady {
			n++
		}
	}
	cs.m.chunkStores.Set(float64(n))
}

// valid reads the store at path and reports whether it is complete and
// of the decoded image whose sha256 is decoded.
func valid(path, decoded string) (*chunks.Index, os.FileInfo, bool) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, false
	}
	x, err := chunks.ReadIndex(f, fi.Size(), 0)
	if err != nil || x.SHA256 != decoded || x.FileSize != fi.Size() {
		return nil, nil, false
	}
	return x, fi, true
}

func readyState(x *chunks.Index, fi os.FileInfo) func(*chunkState) {
	return func(st *chunkState) {
		st.ChunkStore = api.ChunkStore{State: chunkReady, DoneBytes: x.ImageSize, TotalBytes: x.ImageSize,
			SizeBytes: fi.Size(), ChunkSize: x.ChunkSize, Chunks: int64(len(x.Chunks))}
		st.modTime = fi.ModTime()
	}
}

// build makes job's store, unless a valid one is there already (a
// restart).
func (cs *chunkStores) build(ctx context.Context, j chunkJob) {
	path := cs.path(j.file)
	if x, fi, ok := valid(path, j.decoded); ok {
		cs.set(j.file, readyState(x, fi))
		return
	}
	fail := func(err error) {
		msg := catalogError(err, filepath.Join(cs.root, j.name), j.name)
		cs.set(j.file, func(st *chunkState) {
			st.State, st.Error = chunkFailed, msg
		})
		cs.m.chunkBuilds.WithLabelValues("failed").Inc()
		cs.log.Warn("building chunk store", "name", j.name, "sha256", j.file, "err", msg)
	}
	src, err := openSourceInRoot(cs.root, j.name)
	if err != nil {
		fail(err)
		return
	}
	defer src.Close()
	img, err := image.Open(ctx, src, image.Options{Logger: cs.log})
	if err != nil {
		fail(err)
		return
	}
	defer img.Close()
	r, err := image.Reader(img)
	if err != nil {
		fail(err)
		return
	}
	total := j.total
	if img.Size() > 0 {
		total = img.Size()
	}
	cs.set(j.file, func(st *chunkState) {
		st.ChunkStore = api.ChunkStore{State: chunkBuilding, TotalBytes: total}
	})
	start := time.Now()
	x, err := chunks.Build(ctx, r, path, chunks.BuildOptions{Workers: chunkWorkers(), SourceSHA256: j.file, Progress: func(done int64) {
		cs.m.chunkBuildBytes.Set(float64(done))
		cs.set(j.file, func(st *chunkState) { st.DoneBytes = done })
	}})
	cs.m.chunkBuildBytes.Set(0)
	if ctx.Err() != nil {
		return // stopping
	}
	if err != nil {
		fail(err)
		return
	}
	if x.SHA256 != j.decoded {
		// The file changed while it was read: its new sha256 gets a
		// store of its own once hashed.
		os.Remove(path)
		fail(fmt.Errorf("the image changed while its chunk store was built (decoded sha256 %s, the catalog's %s); it is built again once the image is hashed again", x.SHA256, j.decoded))
		return
	}
	fi, err := os.Stat(path)
	if err != nil {
		fail(err)
		return
	}
	cs.set(j.file, readyState(x, fi))
	cs.m.chunkBuilds.WithLabelValues("ok").Inc()
	cs.log.Info("chunk store built", "name", j.name, "sha256", j.file, "chunks", len(x.Chunks), "bytes", fi.Size(),
		"seconds", time.Since(start).Seconds())
}

// sweep removes the stores (and leftover temporary files) of files no
// catalog image has, and forgets their states. While an image's hash is
// unknown nothing is removed: it may still be the file of a store.
func (cs *chunkStores) sweep(ctx context.Context) {
	list, err := cs.cat.list(ctx)
	if err != nil {
		cs.log.Warn("listing images for their chunk stores", "err", err)
		return
	}
	keep := map[string]bool{}
	for _, e := range list {
		if e.SHA256 != nil {
			keep[*e.SHA256] = true
		} else if e.Error == "" {
			return // not hashed yet
		}
	}
	cs.mu.Lock()
	for file := range cs.states {
		if !keep[file] {
			delete(cs.states, file)
		}
	}
	cs.countReadyLocked()
	cs.mu.Unlock()
	dirents, err := os.ReadDir(cs.dir)
	if err != nil {
		cs.log.Warn("reading the chunk store directory", "dir", cs.dir, "err", err)
		return
	}
	for _, d := range dirents {
		n := d.Name()
		sum, ok := strings.CutSuffix(n, ".btyc")
		temp := strings.HasPrefix(n, ".") && strings.Contains(n, ".btyc.")
		if (!ok || keep[sum]) && !temp {
			continue
		}
		if err := os.Remove(filepath.Join(cs.dir, n)); err != nil {
			cs.log.Warn("removing a stale chunk store", "file", n, "err", err)
			continue
		}
		cs.log.Info("chunk store removed (its image is gone or changed)", "file", n)
	}
}

// chunkText describes a chunk store for the Images page.
func chunkText(c *api.ChunkStore) string {
	if c == nil {
		return "—"
	}
	switch c.State {
	case chunkReady:
		return fmt.Sprintf("ready (%s, %s chunks)", human.Bytes(c.SizeBytes), humanize.Comma(c.Chunks))
	case chunkBuilding:
		return "building " + buildProgress(c)
	case chunkFailed:
		return "failed: " + c.Error
	}
	return c.State
}

// buildProgress is how far a build is: "42 %", or "1.2 GiB so far"
// when the decoded size is not known.
func buildProgress(c *api.ChunkStore) string {
	if c.TotalBytes > 0 {
		return fmt.Sprintf("%d %%", min(100, c.DoneBytes*100/c.TotalBytes))
	}
	return human.Bytes(c.DoneBytes) + " so far"
}

func (s *Server) handleImageChunks(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := checkName(name); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if _, err := statInRoot(s.cfg.ImageRoot, name); leavesRoot(s.cfg.ImageRoot, name, err) {
		writeError(w, http.StatusForbidden, fmt.Sprintf("image %q is a link out of the images directory: not served", name))
		return
	}
	e, ok := s.catalog.get(r.Context(), name)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no image %q", name))
		return
	}
	cs := s.catalog.chunks
	none := func(why string) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("image %q has no chunk store: %s; flash it whole", name, why))
	}
	switch {
	case cs == nil:
		none("chunk stores are off on this server (BTY_CHUNK_STORES=off)")
		return
	case e.Error != "":
		none(e.Error)
		return
	case e.SHA256 == nil:
		writeError(w, http.StatusNotFound, fmt.Sprintf("no chunk store for image %q yet: the image is being hashed first", name))
		return
	case e.Chunks == nil:
		none("unknown state")
		return
	}
	switch c := e.Chunks; c.State {
	case chunkQueued:
		writeError(w, http.StatusNotFound, fmt.Sprintf("no chunk store for image %q yet: it is queued to be built", name))
		return
	case chunkBuilding:
		writeError(w, http.StatusNotFound, fmt.Sprintf("no chunk store for image %q yet: it is being built (%s)", name, buildProgress(c)))
		return
	case chunkFailed:
		none("its build failed: " + c.Error)
		return
	}
	f, mt, err := cs.open(*e.SHA256)
	if errors.Is(err, os.ErrNotExist) {
		none("its file is gone (it is being replaced)")
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	defer f.Close()
	// The store of a file sha256 changes only when rebuilt: its time
	// tells two builds apart.
	w.Header().Set("ETag", fmt.Sprintf(`"%s-%x"`, *e.SHA256, mt.UnixNano()))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Accept-Ranges", "bytes")
	before := bytesWritten(w)
	http.ServeContent(w, r, name+".btyc", mt, f)
	s.metrics.bytesServed.WithLabelValues("chunks").Add(float64(bytesWritten(w) - before))
}
