package media

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/btyproject/bty/internal/ctxio"
	"github.com/btyproject/bty/internal/exitcode"
)

// Kernel is an unpacked Debian kernel package.
type Kernel struct {
	Version string // "6.1.0-56-amd64"
	Vmlinuz string // host path of boot/vmlinuz-<Version>
	ModDir  string // host path of the unpacked lib/modules/<Version>
}

// DefaultCacheDir is where downloaded and unpacked packages are kept:
// $XDG_CACHE_HOME/bty-media, else ~/.cache/bty-media.
func DefaultCacheDir() string {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "bty-media")
	}
	if h, err := os.UserHomeDir(); err == nil && h != "" {
		return filepath.Join(h, ".cache", "bty-media")
	}
	return filepath.Join(os.TempDir(), "bty-media-cache")
}

// FetchKernel returns the kernel of kernelDeb (a linux-image-*.deb), or,
// when kernelDeb is empty, of the package Debian's linux-image-amd64
// currently depends on, downloaded with apt-get into cacheDir. Both are
// unpacked (not installed) into cacheDir and reused from there.
func FetchKernel(ctx context.Context, cacheDir, kernelDeb string, log *slog.Logger) (*Kernel, error) {
	log = orDiscard(log)
	cacheDir = orDefaultCache(cacheDir)
	var root string
	var err error
	if kernelDeb != "" {
		root, err = unpackLocalDeb(ctx, cacheDir, kernelDeb, log)
	} else {
		var pkg string
		pkg, err = kernelPackage(ctx, log)
		if err != nil {
			return nil, err
		}
		root, err = fetchDeb(ctx, cacheDir, pkg, log)
	}
	if err != nil {
		return nil, err
	}
	return kernelIn(root, kernelDeb)
}

// kernelIn finds the one kernel in an unpacked linux-image package.
func kernelIn(root, what string) (*Kernel, error) {
	if what == "" {
		what = root
	}
	var dirs []string
	for _, base := range []string{"lib/modules", "usr/lib/modules"} {
		ents, err := os.ReadDir(filepath.Join(root, base))
		if err != nil {
			continue
		}
		for _, e := range ents {
			if e.IsDir() {
				if _, err := os.Stat(filepath.Join(root, base, e.Name(), "kernel")); err == nil {
					dirs = append(dirs, filepath.Join(root, base, e.Name()))
				}
			}
		}
	}
	if len(dirs) != 1 {
		return nil, fmt.Errorf("%s holds %d kernel module trees (lib/modules/<version>/kernel), want 1: give a Debian linux-image-<version> package (not the linux-image-amd64 meta package)", what, len(dirs))
	}
	k := &Kernel{Version: filepath.Base(dirs[0]), ModDir: dirs[0]}
	for _, p := range []string{"boot/vmlinuz-" + k.Version, "usr/lib/linux/vmlinuz-" + k.Version} {
		if st, err := os.Stat(filepath.Join(root, p)); err == nil && st.Mode().IsRegular() {
			k.Vmlinuz = filepath.Join(root, p)
			return k, nil
		}
	}
	return nil, fmt.Errorf("%s has modules for %s but no boot/vmlinuz-%s: give a complete Debian linux-image-<version> package", what, k.Version, k.Version)
}

// FetchDebFile returns the host path of pathInDeb in Debian package pkg,
// downloaded with apt-get into cacheDir and unpacked there (cached).
func FetchDebFile(ctx context.Context, cacheDir, pkg, pathInDeb string, log *slog.Logger) (string, error) {
	return fetchDebFile(ctx, cacheDir, pkg, orDiscard(log), pathInDeb)
}

// fetchDebFile is FetchDebFile trying several paths (a package that moved
// files to /usr between releases), the first existing one wins.
func fetchDebFile(ctx context.Context, cacheDir, pkg string, log *slog.Logger, paths ...string) (string, error) {
	root, err := fetchDeb(ctx, orDefaultCache(cacheDir), pkg, log)
	if err != nil {
		return "", err
	}
	for _, p := range paths {
		full := filepath.Join(root, strings.TrimPrefix(p, "/"))
		if st, err := os.Stat(full); err == nil && st.Mode().IsRegular() {
			return full, nil
		}
	}
	return "", fmt.Errorf("package %s has no %s: the Debian package changed, report this to bty's developers", pkg, strings.Join(paths, " or "))
}

func orDefaultCache(d string) string {
	if d == "" {
		return DefaultCacheDir()
	}
	return d
}

func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// Cache layout, under the cache directory:
//
//	debs/<file>.deb        packages as apt-get download names them
//	unpacked/<file>/       dpkg-deb -x of each, renamed into place when complete
//	locks/<package>.lock   flock held while a package is fetched
//
// An unpacked directory exists only once complete, so an interrupted run
// never leaves something the next run takes as valid.
const (
	debsDir     = "debs"
	unpackedDir = "unpacked"
	locksDir    = "locks"
)

// fetchDeb makes sure pkg's current candidate is unpacked in the cache
// and returns the directory it is unpacked in.
func fetchDeb(ctx context.Context, cacheDir, pkg string, log *slog.Logger) (string, error) {
	key := cacheDir + "\x00" + pkg
	if root, ok := fetched.get(key); ok {
		return root, nil
	}
	root, err := fetchDebOnce(ctx, cacheDir, pkg, log)
	if err == nil {
		fetched.put(key, root)
	}
	return root, err
}

// fetched remembers, for this process, where each package was unpacked:
// asking apt again costs a second per package.
var fetched = &memo{m: map[string]string{}}

type memo struct {
	mu sync.Mutex
	m  map[string]string
}

func (c *memo) get(k string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[k]
	if ok {
		if _, err := os.Stat(v); err != nil {
			delete(c.m, k) // the cache was cleaned
			return "", false
		}
	}
	return v, ok
}

func (c *memo) put(k, v string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[k] = v
}

func fetchDebOnce(ctx context.Context, cacheDir, pkg string, log *slog.Logger) (string, error) {
	unlock, err := lockCache(cacheDir, pkg)
	if err != nil {
		return "", err
	}
	defer unlock()

	uri, err := aptURI(ctx, pkg, log)
	if err != nil {
		return "", err
	}
	unpacked := filepath.Join(cacheDir, unpackedDir, strings.TrimSuffix(uri.file, ".deb"))
	if st, err := os.Stat(unpacked); err == nil && st.IsDir() {
		log.Debug("cached", "package", pkg, "dir", unpacked)
		return unpacked, nil
	}
	deb := filepath.Join(cacheDir, debsDir, uri.file)
	if sum, err := ctxio.FileSHA256(ctx, deb); err != nil || (uri.sha256 != "" && sum != uri.sha256) {
		if err := aptDownload(ctx, cacheDir, pkg, uri, log); err != nil {
			return "", err
		}
	} else {
		log.Debug("cached", "package", pkg, "deb", deb)
	}
	if err := unpackDeb(ctx, deb, unpacked, log); err != nil {
		return "", err
	}
	return unpacked, nil
}

// unpackLocalDeb unpacks a .deb the user gave, keyed by its name and
// content hash (a rebuilt package with the same name is unpacked again).
func unpackLocalDeb(ctx context.Context, cacheDir, deb string, log *slog.Logger) (string, error) {
	st, err := os.Stat(deb)
	if err != nil {
		return "", exitcode.Wrap(exitcode.Usage, fmt.Errorf("--kernel-deb: %w", err))
	}
	if !st.Mode().IsRegular() || !strings.HasSuffix(deb, ".deb") {
		return "", exitcode.New(exitcode.Usage, "--kernel-deb %s: not a .deb file: give a Debian linux-image-<version>_<...>.deb", deb)
	}
	sum, err := ctxio.FileSHA256(ctx, deb)
	if err != nil {
		return "", fmt.Errorf("reading --kernel-deb: %w", err)
	}
	// The very package apt-get fetched before: its unpacked tree.
	base := strings.TrimSuffix(filepath.Base(deb), ".deb")
	if same, err := ctxio.FileSHA256(ctx, filepath.Join(cacheDir, debsDir, filepath.Base(deb))); err == nil && same == sum {
		if st, err := os.Stat(filepath.Join(cacheDir, unpackedDir, base)); err == nil && st.IsDir() {
			return filepath.Join(cacheDir, unpackedDir, base), nil
		}
	}
	name := base + "-" + sum[:12]
	unlock, err := lockCache(cacheDir, name)
	if err != nil {
		return "", err
	}
	defer unlock()
	unpacked := filepath.Join(cacheDir, unpackedDir, name)
	if st, err := os.Stat(unpacked); err == nil && st.IsDir() {
		return unpacked, nil
	}
	if err := unpackDeb(ctx, deb, unpacked, log); err != nil {
		return "", err
	}
	return unpacked, nil
}

// lockCache creates the cache and takes the lock of name in it, so two
// runs sharing a cache do not download or unpack the same package at once.
func lockCache(cacheDir, name string) (func(), error) {
	for _, d := range []string{debsDir, unpackedDir, locksDir} {
		if err := os.MkdirAll(filepath.Join(cacheDir, d), 0o755); err != nil {
			return nil, fmt.Errorf("creating the download cache: %w (choose another with --cache DIR)", err)
		}
	}
	f, err := os.OpenFile(filepath.Join(cacheDir, locksDir, name+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("locking the download cache: %w (choose another with --cache DIR)", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking the download cache %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil
}

// aptURIInfo is one line of `apt-get download --print-uris`.
type aptURIInfo struct {
	url, file, sha256 string
}

// aptURI asks apt which file pkg's candidate is, running apt-get update
// once when the package lists do not know it.
func aptURI(ctx context.Context, pkg string, log *slog.Logger) (aptURIInfo, error) {
	var out []byte
	err := withAptUpdate(ctx, pkg, log, func() error {
		var err error
		out, err = runTool(ctx, "", "apt-get", aptArgs("download", "--print-uris", pkg)...)
		return err
	})
	if err != nil {
		return aptURIInfo{}, err
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && strings.HasPrefix(f[0], "'") && strings.HasSuffix(f[1], ".deb") {
			u := aptURIInfo{url: strings.Trim(f[0], "'"), file: f[1]}
			if len(f) >= 4 {
				if h, ok := strings.CutPrefix(f[3], "SHA256:"); ok {
					u.sha256 = h
				}
			}
			if strings.ContainsAny(u.file, "/\x00") || u.file == ".deb" {
				return aptURIInfo{}, fmt.Errorf("apt-get gave an odd file name %q for %s", u.file, pkg)
			}
			return u, nil
		}
	}
	return aptURIInfo{}, fmt.Errorf("apt-get download --print-uris %s printed no package file:\n%s", pkg, out)
}

// aptDownload downloads pkg into a private directory of the cache and
// moves the file into debs/ once apt-get has checked it.
func aptDownload(ctx context.Context, cacheDir, pkg string, uri aptURIInfo, log *slog.Logger) error {
	t0 := time.Now()
	log.Info("downloading", "package", pkg, "file", uri.file)
	tmp, err := os.MkdirTemp(filepath.Join(cacheDir, debsDir), ".download-")
	if err != nil {
		return fmt.Errorf("downloading %s: %w", pkg, err)
	}
	defer os.RemoveAll(tmp)
	err = withAptUpdate(ctx, pkg, log, func() error {
		_, err := runTool(ctx, tmp, "apt-get", aptArgs("download", pkg)...)
		return err
	})
	if err != nil {
		return err
	}
	got := filepath.Join(tmp, uri.file)
	if _, err := os.Stat(got); err != nil {
		// The lists changed under us (apt-get update ran): take what came.
		m, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
		if len(m) != 1 {
			return fmt.Errorf("apt-get download %s left no %s: run it by hand to see why", pkg, uri.file)
		}
		got = m[0]
	}
	if err := os.Rename(got, filepath.Join(cacheDir, debsDir, filepath.Base(got))); err != nil {
		return fmt.Errorf("storing %s in the cache: %w", pkg, err)
	}
	st, _ := os.Stat(filepath.Join(cacheDir, debsDir, filepath.Base(got)))
	log.Info("downloaded", "package", pkg, "bytes", sizeOf(st), "took", since(t0))
	return nil
}

func sizeOf(st os.FileInfo) int64 {
	if st == nil {
		return 0
	}
	return st.Size()
}

// unpackDeb runs dpkg-deb -x into a temporary directory next to dst and
// renames it to dst when complete.
func unpackDeb(ctx context.Context, deb, dst string, log *slog.Logger) error {
	t0 := time.Now()
	tmp, err := os.MkdirTemp(filepath.Dir(dst), ".unpack-")
	if err != nil {
		return fmt.Errorf("unpacking %s: %w", filepath.Base(deb), err)
	}
	defer os.RemoveAll(tmp)
	if _, err := runTool(ctx, "", "dpkg-deb", "-x", deb, tmp); err != nil {
		return fmt.Errorf("%w (is %s a complete Debian package? delete it to download it again)", err, deb)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		if st, serr := os.Stat(dst); serr == nil && st.IsDir() {
			return nil // another run finished first
		}
		return fmt.Errorf("unpacking %s: %w", filepath.Base(deb), err)
	}
	log.Info("unpacked", "package", filepath.Base(deb), "took", since(t0))
	return nil
}

// kernelPackage returns the linux-image-<version> package that Debian's
// linux-image-amd64 meta package depends on.
func kernelPackage(ctx context.Context, log *slog.Logger) (string, error) {
	kernelPkgOnce.mu.Lock()
	defer kernelPkgOnce.mu.Unlock()
	if kernelPkgOnce.pkg != "" {
		return kernelPkgOnce.pkg, nil
	}
	pkg, err := askKernelPackage(ctx, log)
	kernelPkgOnce.pkg = pkg
	return pkg, err
}

// kernelPkgOnce remembers the answer for this process.
var kernelPkgOnce struct {
	mu  sync.Mutex
	pkg string
}

func askKernelPackage(ctx context.Context, log *slog.Logger) (string, error) {
	var out []byte
	err := withAptUpdate(ctx, "linux-image-amd64", log, func() error {
		var err error
		out, err = runTool(ctx, "", "apt-cache", "depends", "linux-image-amd64")
		return err
	})
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		line = strings.TrimPrefix(line, "|")
		if p, ok := strings.CutPrefix(line, "Depends: "); ok && strings.HasPrefix(p, "linux-image-") {
			p = strings.TrimSpace(p)
			log.Info("kernel package", "meta", "linux-image-amd64", "package", p)
			return p, nil
		}
	}
	return "", fmt.Errorf("apt-cache depends linux-image-amd64 names no linux-image-* package; give a kernel with --kernel-deb FILE:\n%s", out)
}

// withAptUpdate runs fn; when it fails because the package lists do not
// know pkg (or name a file the mirror no longer has), it runs
// apt-get update once and tries again.
func withAptUpdate(ctx context.Context, pkg string, log *slog.Logger, fn func() error) error {
	err := fn()
	if err == nil || !staleLists(err) {
		return err
	}
	t0 := time.Now()
	log.Info("the package lists do not have it: running apt-get update", "package", pkg, "reason", firstLine(err.Error()))
	if _, uerr := runTool(ctx, "", "apt-get", "update", "-qq"); uerr != nil {
		if os.Geteuid() != 0 {
			return fmt.Errorf("%w; apt-get update failed too (%v): run `apt-get update` as root, then try again", err, uerr)
		}
		return fmt.Errorf("%w; apt-get update failed too: %v", err, uerr)
	}
	log.Info("apt-get update done", "took", since(t0))
	return fn()
}

func staleLists(err error) bool {
	s := err.Error()
	for _, m := range []string{"Unable to locate", "no installation candidate", "No packages found", "404  Not Found", "404 Not Found"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// aptArgs adds the options every apt-get call gets. As root, apt-get
// downloads as the _apt user, which cannot write to a private cache
// directory; it would fall back to root with a warning anyway.
func aptArgs(args ...string) []string {
	if os.Geteuid() == 0 {
		args = append([]string{"-o", "APT::Sandbox::User=root"}, args...)
	}
	return append([]string{"-q"}, args...)
}

// runTool runs an external program and returns its stdout; a failure
// carries its stderr. A program missing from PATH is exit code 4 with the
// package to install.
func runTool(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
	if err := requireTools(name); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "MTOOLS_SKIP_CHECK=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return stdout.Bytes(), nil
}

// toolPackages names the Debian package of each external program.
var toolPackages = map[string]string{
	"apt-get": "apt", "apt-cache": "apt", "dpkg-deb": "dpkg",
	"mkfs.vfat": "dosfstools", "mmd": "mtools", "mcopy": "mtools",
	"mkfs.exfat": "exfatprogs", "mkfs.ext4": "e2fsprogs",
}

// requireTools is exit code 4 naming the apt-get install line for every
// missing program.
func requireTools(names ...string) error {
	var missing, pkgs []string
	seen := map[string]bool{}
	for _, n := range names {
		if _, err := exec.LookPath(n); err == nil {
			continue
		}
		missing = append(missing, n)
		p := toolPackages[n]
		if p == "" {
			p = n
		}
		if !seen[p] {
			seen[p] = true
			pkgs = append(pkgs, p)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return exitcode.New(exitcode.MissingTool, "%s not found in PATH: run apt-get install %s", strings.Join(missing, ", "), strings.Join(pkgs, " "))
}

func since(t time.Time) string { return time.Since(t).Round(time.Millisecond).String() }
