package ctl

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/btyproject/bty/internal/client"
	"github.com/btyproject/bty/internal/human"
)

// uploadFlags are the flags images upload and boot upload share.
type uploadFlags struct {
	name       string
	sha        string
	checksum   bool
	noProgress bool
}

func (u *uploadFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&u.name, "name", "", "name on the server (default: the file's base name)")
	f.StringVar(&u.sha, "sha256", "", "expected sha256 of the file (64 hex digits); the server refuses a mismatch and keeps nothing")
	f.BoolVar(&u.checksum, "checksum", false, "compute the file's sha256 first and have the server check the upload against it")
	f.BoolVar(&u.noProgress, "no-progress", false, "do not show progress on stderr")
	cmd.MarkFlagsMutuallyExclusive("sha256", "checksum")
}

// localFile is a file checked and opened for upload.
type localFile struct {
	f    *os.File
	size int64
	name string // on the server
}

// open checks the arguments of an upload before anything is sent:
// the file exists and is a regular file, the name is one path element,
// the sha256 is well-formed. All of these are misuse (exit 2).
func (u *uploadFlags) open(path string) (*localFile, error) {
	if u.sha != "" {
		u.sha = strings.ToLower(strings.TrimSpace(u.sha))
		if _, err := hex.DecodeString(u.sha); err != nil || len(u.sha) != 64 {
			return nil, usageErr("--sha256 %q: want 64 hexadecimal digits (sha256sum FILE prints them)", u.sha)
		}
	}
	name := u.name
	if name == "" {
		name = filepath.Base(path)
	}
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return nil, usageErr("--name %q: want a plain file name, without '/'", name)
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, usageErr("no file %s: give the path of the file to upload", path)
	}
	if err != nil {
		return nil, usageErr("opening %s: %v", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, usageErr("%s is not a regular file: give the path of the file to upload", path)
	}
	return &localFile{f: f, size: st.Size(), name: name}, nil
}

// uploadResult is what both uploads report.
type uploadResult struct {
	bytes   int64
	elapsed time.Duration
	rate    float64
	sha256  string // computed or given locally, "" otherwise
}

// send hashes the file first when asked, then streams it with put,
// showing progress on stderr.
func (u *uploadFlags) send(ctx context.Context, e *env, lf *localFile,
	put func(ctx context.Context, body io.Reader, size int64, opt client.UploadOptions) error) (uploadResult, error) {
	res := uploadResult{bytes: lf.size, sha256: u.sha}
	if u.checksum {
		sum, err := u.hash(e, lf)
		if err != nil {
			return res, err
		}
		res.sha256 = sum
		if _, err := lf.f.Seek(0, io.SeekStart); err != nil {
			return res, fmt.Errorf("rewinding %s: %w", lf.f.Name(), err)
		}
	}
	opt := client.UploadOptions{SHA256: res.sha256}
	var p *progress
	if !u.noProgress {
		p = newProgress(e, "uploading "+lf.name, lf.size)
		opt.Progress = p.update
	}
	start := e.now()
	err := put(ctx, lf.f, lf.size, opt)
	res.elapsed = e.now().Sub(start)
	res.rate = rate(lf.size, res.elapsed)
	if p != nil {
		p.finish()
	}
	return res, err
}

// hash computes the file's sha256, with progress.
func (u *uploadFlags) hash(e *env, lf *localFile) (string, error) {
	h := sha256.New()
	var r io.Reader = lf.f
	var p *progress
	if !u.noProgress {
		p = newProgress(e, "hashing "+lf.name, lf.size)
		r = &countingReader{r: r, fn: p.update}
	}
	_, err := io.CopyBuffer(h, r, make([]byte, 1<<20))
	if p != nil {
		p.finish()
	}
	if err != nil {
		return "", fmt.Errorf("hashing %s: %w", lf.f.Name(), err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

type countingReader struct {
	r  io.Reader
	n  int64
	fn func(n, total int64)
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	if n > 0 {
		c.fn(c.n, -1)
	}
	return n, err
}

// describe is the one-line outcome of an upload.
func (r uploadResult) describe(kind, name, server string, replaced bool) string {
	verb := "uploaded"
	if replaced {
		verb = "replaced"
	}
	s := fmt.Sprintf("%s %s %s on %s: %s in %s (%s/s)", verb, kind, name, server, human.BytesOr(r.bytes, "-"),
		human.Duration(r.elapsed), human.BytesOr(int64(r.rate), "-"))
	if r.sha256 != "" {
		s += ", sha256 " + r.sha256 + " checked by the server"
	}
	return s
}

func (r uploadResult) fields() map[string]any {
	f := map[string]any{"bytes": r.bytes, "seconds": r.elapsed.Seconds(), "bytes_per_second": r.rate}
	if r.sha256 != "" {
		f["sha256"] = r.sha256
	}
	return f
}

// uploadFunc sends one file to the server; it returns the server's
// answer and whether a file of that name was replaced.
type uploadFunc func(ctx context.Context, c *client.Client, name string, body io.Reader, size int64, opt client.UploadOptions) (any, bool, error)

// run is an upload command: open path, log in, send it with do and
// report it; cmdName is the JSON command, kind names what the file
// becomes ("image"), key is the answer's JSON field. more, when set,
// returns text to append to the report line (and may warn).
func (u *uploadFlags) run(ctx context.Context, e *env, cmdName, path, kind, key string, do uploadFunc,
	more func(res uploadResult, name string, answer any) string) error {
	lf, err := u.open(path)
	if err != nil {
		return e.fail(cmdName, err, map[string]any{"file": path})
	}
	defer lf.f.Close()
	extra := map[string]any{"file": path, "name": lf.name}
	c, err := e.authClient()
	if err != nil {
		return e.fail(cmdName, err, extra)
	}
	extra["server"] = c.Server()
	var answer any
	var replaced bool
	res, err := u.send(ctx, e, lf, func(ctx context.Context, body io.Reader, size int64, opt client.UploadOptions) error {
		var err error
		answer, replaced, err = do(ctx, c, lf.name, body, size, opt)
		return err
	})
	if err != nil {
		return e.fail(cmdName, e.apiErr("uploading "+path+" as "+kind+" "+lf.name, c, err), extra)
	}
	if e.asJSON {
		f := res.fields()
		f["ok"], f["server"], f["file"], f[key], f["replaced"] = true, c.Server(), path, answer, replaced
		return writeJSON(e, cmdName, f)
	}
	line := res.describe(kind, lf.name, c.Server(), replaced)
	if more != nil {
		line += more(res, lf.name, answer)
	}
	fmt.Fprintln(e.stdout, line)
	return nil
}
