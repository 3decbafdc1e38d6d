package server

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
)

// checkName validates a file name from a URL path or a machine record
// (image and boot-artifact names): checkPathName's rules, then
// checkDisplayName's.
func checkName(name string) error {
	if err := checkPathName(name); err != nil {
		return err
	}
	return checkDisplayName(name)
}

// checkPathName checks that name is safe as a path: one path element,
// no traversal, no NUL, not hidden (uploads in progress are hidden
// files), at most fleet.MaxNameBytes.
func checkPathName(name string) error {
	switch {
	case name == "":
		return errors.New("empty file name")
	case len(name) > fleet.MaxNameBytes:
		return fmt.Errorf("file name longer than %d bytes", fleet.MaxNameBytes)
	case strings.ContainsRune(name, 0):
		return errors.New("file name contains a NUL byte")
	case strings.ContainsAny(name, `/\`):
		return fmt.Errorf("file name %q contains a path separator: names are single files in the directory", name)
	case name == "." || name == ".." || strings.Contains(name, ".."):
		return fmt.Errorf("file name %q contains \"..\"", name)
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("file name %q starts with a dot (hidden files are not served)", name)
	}
	return nil
}

// checkDisplayName refuses a name that would not display as what it
// is: invalid UTF-8, white space at either end, and control, format
// (among them the bidirectional controls that reorder what follows,
// U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C, and invisible
// ones like U+200B) or line-separator characters anywhere. Letters of
// any script and inner spaces are fine.
func checkDisplayName(name string) error {
	const todo = "; use a name of visible characters"
	if !utf8.ValidString(name) {
		return fmt.Errorf("file name %q is not valid UTF-8%s", name, todo)
	}
	if first, _ := utf8.DecodeRuneInString(name); unicode.IsSpace(first) {
		return fmt.Errorf("file name %q starts with white space%s", name, todo)
	}
	if last, _ := utf8.DecodeLastRuneInString(name); unicode.IsSpace(last) {
		return fmt.Errorf("file name %q ends with white space%s", name, todo)
	}
	for _, r := range name {
		var what string
		switch {
		case isBidiControl(r):
			what = "a bidirectional control character, which makes the name display in another order than it has"
		case unicode.IsControl(r):
			what = "a control character"
		case unicode.Is(unicode.Cf, r):
			what = "an invisible format character"
		case unicode.In(r, unicode.Zl, unicode.Zp):
			what = "a line or paragraph separator"
		default:
			continue
		}
		return fmt.Errorf("file name %q contains %U, %s%s", name, r, what, todo)
	}
	return nil
}

// isBidiControl reports whether r is one of Unicode's bidirectional
// formatting characters (UAX #9: embeddings, overrides, isolates,
// marks).
func isBidiControl(r rune) bool {
	return r >= 0x202A && r <= 0x202E || r >= 0x2066 && r <= 0x2069 || r == 0x200E || r == 0x200F || r == 0x061C
}

// serveFile serves dir/name with Range, If-Range and a strong ETag from
// size and mtime; kind labels the bytes-served metric.
func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, dir, name, kind string) {
	if err := checkName(name); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	f, err := openInRoot(dir, name)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			writeError(w, http.StatusNotFound, fmt.Sprintf("no %s %q", kind, name))
			return
		}
		if leavesRoot(dir, name, err) {
			writeError(w, http.StatusForbidden, fmt.Sprintf("%s %q is a link out of the %s directory: not served", kind, name, kindDir(kind)))
			return
		}
		s.internalError(w, r, err)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	if !st.Mode().IsRegular() {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no %s %q", kind, name))
		return
	}
	w.Header().Set("ETag", fileETag(st))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Accept-Ranges", "bytes")
	before := bytesWritten(w)
	// ServeContent answers Range, If-Range, If-None-Match and HEAD; the
	// body goes through ReadFrom, so the kernel copies it (sendfile).
	http.ServeContent(w, r, name, st.ModTime(), f)
	s.metrics.bytesServed.WithLabelValues(kind).Add(float64(bytesWritten(w) - before))
}

func fileETag(st os.FileInfo) string {
	return fmt.Sprintf(`"%x-%x"`, st.Size(), st.ModTime().UnixNano())
}

func bytesWritten(w http.ResponseWriter) int64 {
	if sw, ok := w.(*statusWriter); ok {
		return sw.bytes
	}
	return 0
}

// upload is a file being received: written to a hidden temp file in
// the target directory, hashed as it goes, renamed into place at the end.
type upload struct {
	tmp  *os.File
	hash hash.Hash
	n    int64
}

// uploadError carries the HTTP status for a failed upload.
type uploadError struct {
	code int
	msg  string
}

func (e *uploadError) Error() string { return e.msg }

func uploadErr(code int, format string, args ...any) error {
	return &uploadError{code: code, msg: fmt.Sprintf(format, args...)}
}

// receive streams the request body (at most limit bytes) into a temp
// file in dir. check, when set, sees the first bytes (up to 64 KiB) and
// may refuse the upload. The expected sha256 comes from the sha256 query
// parameter or the X-Checksum-Sha256 header. On success the temp file is
// synced and ready for commit; on failure it is gone.
func receive(r *http.Request, w http.ResponseWriter, dir string, limit int64, check func(head []byte) error) (*upload, error) {
	expect := strings.ToLower(strings.TrimSpace(r.URL.Query().Get("sha256")))
	if expect == "" {
		expect = strings.ToLower(strings.TrimSpace(r.Header.Get("X-Checksum-Sha256")))
	}
	if expect != "" && (len(expect) != 64 || strings.Trim(expect, "0123456789abcdef") != "") {
		return nil, uploadErr(http.StatusBadRequest, "sha256 %q is not 64 hexadecimal digits", expect)
	}
	if r.ContentLength > limit {
		return nil, uploadErr(http.StatusRequestEntityTooLarge, "the upload is %d bytes; the limit is %d (BTY_MAX_UPLOAD)", r.ContentLength, limit)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, ".bty-upload-*")
	if err != nil {
		return nil, fmt.Errorf("creating a temp file in %s: %w", dir, err)
	}
	u := &upload{tmp: tmp, hash: sha256.New()}
	ok := false
	defer func() {
		if !ok {
			u.abort()
		}
	}()
	body := http.MaxBytesReader(w, r.Body, limit)
	head := make([]byte, 64<<10)
	hn, err := io.ReadFull(body, head)
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		err = nil
	case err != nil:
		return nil, readError(err, limit)
	}
	head = head[:hn]
	if hn == 0 {
		return nil, uploadErr(http.StatusBadRequest, "the upload is empty")
	}
	if check != nil {
		if err := check(head); err != nil {
			return nil, uploadErr(http.StatusBadRequest, "%v", err)
		}
	}
	mw := io.MultiWriter(tmp, u.hash)
	if _, err := mw.Write(head); err != nil {
		return nil, writeError507(err)
	}
	n, err := io.Copy(mw, body)
	u.n = int64(hn) + n
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return nil, writeError507(err)
		}
		return nil, readError(err, limit)
	}
	if r.ContentLength >= 0 && u.n != r.ContentLength {
		return nil, uploadErr(http.StatusBadRequest, "the upload ended after %d of %d bytes", u.n, r.ContentLength)
	}
	if got := u.sum(); expect != "" && got != expect {
		return nil, uploadErr(http.StatusBadRequest, "sha256 mismatch: the upload is %s, expected %s; nothing was kept", got, expect)
	}
	if err := tmp.Sync(); err != nil {
		return nil, writeError507(err)
	}
	ok = true
	return u, nil
}

func readError(err error, limit int64) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return uploadErr(http.StatusRequestEntityTooLarge, "the upload is larger than the limit of %d bytes (BTY_MAX_UPLOAD)", limit)
	}
	return uploadErr(http.StatusBadRequest, "reading the upload: %v", err)
}

func writeError507(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return uploadErr(http.StatusInsufficientStorage, "the server's disk is full: %v", err)
	}
	return err
}

func (u *upload) sum() string { return hex.EncodeToString(u.hash.Sum(nil)) }

func (u *upload) abort() {
	u.tmp.Close()
	os.Remove(u.tmp.Name())
}

// commit renames the upload to dir/name atomically and syncs the
// directory; replaced says whether a file was overwritten.
func (u *upload) commit(dir, name string) (replaced bool, err error) {
	dst := filepath.Join(dir, name)
	if _, err := os.Lstat(dst); err == nil {
		replaced = true
	}
	if err := u.tmp.Chmod(0o644); err != nil {
		u.abort()
		return false, err
	}
	if err := u.tmp.Close(); err != nil {
		os.Remove(u.tmp.Name())
		return false, err
	}
	if err := os.Rename(u.tmp.Name(), dst); err != nil {
		os.Remove(u.tmp.Name())
		return false, err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return replaced, nil
}

// answerUploadError maps an upload failure to its status.
func (s *Server) answerUploadError(w http.ResponseWriter, r *http.Request, err error) {
	var ue *uploadError
	if errors.As(err, &ue) {
		writeError(w, ue.code, ue.msg)
		return
	}
	s.internalError(w, r, err)
}

// bootArtifacts are the live env files the netboot path needs.
var bootArtifacts = []string{"bty-live-x86_64.vmlinuz", "bty-live-x86_64.initrd"}

// bootFiles lists the boot directory: the live env's required files
// first (present or not), then any other file.
func (s *Server) bootFiles() ([]api.BootFile, error) {
	files := map[string]*api.BootFile{}
	var order []string
	for _, n := range bootArtifacts {
		files[n] = &api.BootFile{Name: n, Required: true}
		order = append(order, n)
	}
	entries, err := os.ReadDir(s.cfg.BootDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, e := range entries {
		if checkName(e.Name()) != nil {
			continue
		}
		st, err := statInRoot(s.cfg.BootDir, e.Name()) // a link out of the directory is not served: not present
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		f, ok := files[e.Name()]
		if !ok {
			f = &api.BootFile{Name: e.Name()}
			files[e.Name()] = f
			order = append(order, e.Name())
		}
		mt := st.ModTime().UTC()
		f.Present, f.SizeBytes, f.ModifiedAt = true, st.Size(), &mt
	}
	out := make([]api.BootFile, 0, len(order))
	for _, n := range order {
		out = append(out, *files[n])
	}
	return out, nil
}

func (s *Server) handleBootList(w http.ResponseWriter, r *http.Request) {
	out, err := s.bootFiles()
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleBootGet(w http.ResponseWriter, r *http.Request) {
	s.serveFile(w, r, s.cfg.BootDir, r.PathValue("name"), "boot")
}

func (s *Server) handleBootPut(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := checkName(name); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	u, err := receive(r, w, s.cfg.BootDir, s.cfg.MaxUpload, nil)
	if err != nil {
		s.answerUploadError(w, r, err)
		return
	}
	replaced, err := u.commit(s.cfg.BootDir, name)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	s.log.Info("boot artifact uploaded", "name", name, "bytes", u.n, "sha256", u.sum(), "client", clientAddr(r))
	code := http.StatusCreated
	if replaced {
		code = http.StatusOK
	}
	writeJSON(w, code, api.BootUpload{Name: name, SizeBytes: u.n, SHA256: u.sum()})
}
