// Package kmod is bty's kernel module index: what modules a kernel tree
// holds, what each depends on and which devices (modaliases) it drives.
//
// bty-media scans the unpacked Debian kernel at build time (Scan), keeps
// the modules the live environment needs (Subset) and writes the result
// into the initramfs as /lib/modules/<kernel>/bty-modules.json (Write).
// The live environment reads it at boot (ReadIndex), finds the modules for
// each device's modalias (Resolve) and loads them in dependency order
// (LoadOrder). There is no depmod and no modules.alias: the index is the
// only metadata the live env needs, and it is JSON so humans can read it.
package kmod

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/btyproject/bty/internal/image"
	"github.com/btyproject/bty/internal/source"
)

// IndexFile is the index's file name; it lives in /lib/modules/<kernel>/.
const IndexFile = "bty-modules.json"

// Module is one loadable kernel module.
type Module struct {
	Name    string   `json:"name"`                  // "virtio_net" (underscores, as the kernel names it)
	Path    string   `json:"path"`                  // relative to the module dir: "kernel/drivers/net/virtio_net.ko"
	Depends []string `json:"depends"`               // from .modinfo depends=
	Aliases []string `json:"aliases"`               // from .modinfo alias= (glob patterns)
	SoftPre []string `json:"softdep_pre,omitempty"` // from .modinfo softdep= "pre: a b" (names or aliases)
}

// Index is the set of modules of one kernel, by name.
type Index struct {
	Kernel  string             `json:"kernel"` // "6.1.0-56-amd64"
	Modules map[string]*Module `json:"modules"`
}

// Normalize returns a module name the way the kernel spells it: '-'
// becomes '_' ("crc32c-intel" is module crc32c_intel).
func Normalize(name string) string { return strings.ReplaceAll(name, "-", "_") }

// normalizeAlias turns '-' into '_' outside [...] classes, as kmod does
// before comparing aliases, so "fs-ext4" matches "fs_ext4" and a class
// like "[0-9]" keeps its range.
func normalizeAlias(s string) string {
	if !strings.ContainsRune(s, '-') {
		return s
	}
	b := []byte(s)
	inClass := false
	for i, c := range b {
		switch {
		case c == '[':
			inClass = true
		case c == ']':
			inClass = false
		case c == '-' && !inClass:
			b[i] = '_'
		}
	}
	return string(b)
}

// compressed module suffixes Scan understands.
var compressedSuffixes = []string{".ko.xz", ".ko.zst", ".ko.gz"}

// IsModuleFile reports whether name is a kernel module file (.ko, or
// .ko.xz/.ko.zst/.ko.gz).
func IsModuleFile(name string) bool {
	if strings.HasSuffix(name, ".ko") {
		return true
	}
	for _, s := range compressedSuffixes {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// UncompressedPath returns p without a compression suffix after ".ko".
func UncompressedPath(p string) string {
	for _, s := range compressedSuffixes {
		if strings.HasSuffix(p, s) {
			return strings.TrimSuffix(p, s) + ".ko"
		}
	}
	return p
}

// Scan walks moddir (an unpacked lib/modules/<kernel>) for module files
// and reads each one's .modinfo section. kernel is recorded in the index.
// Symbolic links (build, source) are not followed.
func Scan(moddir, kernel string) (*Index, error) {
	var paths []string
	err := filepath.WalkDir(moddir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && IsModuleFile(d.Name()) {
			rel, err := filepath.Rel(moddir, p)
			if err != nil {
				return err
			}
			paths = append(paths, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scanning kernel modules in %s: %w (is it an unpacked lib/modules/<version> directory?)", moddir, err)
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no kernel modules (*.ko) under %s: point at an unpacked lib/modules/<version> directory", moddir)
	}
	sort.Strings(paths)

	// Reading 4000 section tables is I/O and syscalls: a few workers.
	mods := make([]*Module, len(paths))
	errs := make([]error, len(paths))
	var wg sync.WaitGroup
	next := make(chan int)
	workers := min(2*runtime.GOMAXPROCS(0), 8)
	for range workers {
		wg.Go(func() {
			for i := range next {
				mods[i], errs[i] = readModule(moddir, paths[i])
			}
		})
	}
	for i := range paths {
		next <- i
	}
	close(next)
	wg.Wait()

	ix := &Index{Kernel: kernel, Modules: make(map[string]*Module, len(paths))}
	for i, m := range mods {
		if errs[i] != nil {
			return nil, errs[i]
		}
		if old, dup := ix.Modules[m.Name]; dup {
			// depmod's default search order: updates/ wins over kernel/.
			if !strings.HasPrefix(m.Path, "updates/") || strings.HasPrefix(old.Path, "updates/") {
				continue
			}
		}
		ix.Modules[m.Name] = m
	}
	return ix, nil
}

// readModule reads one module file's .modinfo.
func readModule(moddir, rel string) (*Module, error) {
	full := filepath.Join(moddir, filepath.FromSlash(rel))
	var r io.ReaderAt
	if strings.HasSuffix(rel, ".ko") {
		f, err := os.Open(full)
		if err != nil {
			return nil, fmt.Errorf("reading kernel module: %w", err)
		}
		defer f.Close()
		r = f
	} else {
		b, err := ReadFile(full)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	ef, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("kernel module %s is not an ELF file: %w (is the kernel package unpacked completely?)", full, err)
	}
	defer ef.Close()
	sec := ef.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("kernel module %s has no .modinfo section: not a kernel module", full)
	}
	info, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("reading .modinfo of %s: %w", full, err)
	}
	m := parseModinfo(info)
	if m.Name == "" {
		base := path.Base(rel)
		m.Name = Normalize(base[:strings.Index(base, ".ko")])
	}
	m.Path = rel
	return m, nil
}

// parseModinfo reads the NUL-separated key=value strings of .modinfo.
func parseModinfo(b []byte) *Module {
	m := &Module{Depends: []string{}, Aliases: []string{}}
	for _, kv := range bytes.Split(b, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			m.Name = Normalize(v)
		case "depends":
			for d := range strings.SplitSeq(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					m.Depends = append(m.Depends, Normalize(d))
				}
			}
		case "alias":
			m.Aliases = append(m.Aliases, v)
		case "softdep":
			// "pre: a b post: c": the words after pre: up to post:.
			pre := false
			for w := range strings.FieldsSeq(v) {
				switch w {
				case "pre:":
					pre = true
				case "post:":
					pre = false
				default:
					if pre {
						m.SoftPre = append(m.SoftPre, w)
					}
				}
			}
		}
	}
	return m
}

// ReadFile returns a module file's contents, decompressed when its name
// ends in .xz, .zst or .gz.
func ReadFile(p string) ([]byte, error) {
	if strings.HasSuffix(p, ".ko") {
		return os.ReadFile(p)
	}
	src, err := source.OpenFile(p)
	if err != nil {
		return nil, fmt.Errorf("reading kernel module: %w", err)
	}
	defer src.Close()
	img, err := image.Open(context.Background(), src, image.Options{Workers: 1})
	if err != nil {
		return nil, fmt.Errorf("opening compressed kernel module %s: %w", p, err)
	}
	defer img.Close()
	s, ok := img.(image.Stream)
	if !ok {
		return nil, fmt.Errorf("kernel module %s is not compressed although its name says so: rename it to end in .ko", p)
	}
	b, err := io.ReadAll(s)
	if err != nil {
		return nil, fmt.Errorf("decompressing kernel module %s: %w (the file is damaged: unpack the kernel package again)", p, err)
	}
	return b, nil
}

// Subset returns the index of names plus everything they need: their
// depends= closure and the modules their softdep pre: entries name (or
// alias) that this index holds. A name the index lacks is an error naming
// it; a soft dependency the index lacks (built in, or not built) is left
// out, as modprobe does.
func (ix *Index) Subset(names []string) (*Index, error) {
	out := &Index{Kernel: ix.Kernel, Modules: map[string]*Module{}}
	var add func(name, neededBy string) error
	add = func(name, neededBy string) error {
		name = Normalize(name)
		if _, done := out.Modules[name]; done {
			return nil
		}
		m, ok := ix.Modules[name]
		if !ok {
			if neededBy != "" {
				return fmt.Errorf("module %s (needed by %s) is not in kernel %s's modules: the module tree is incomplete, unpack the kernel package again", name, neededBy, ix.Kernel)
			}
			return fmt.Errorf("module %q is not a loadable module of kernel %s: check the name (modinfo NAME on a machine running that kernel), it may be built in or not built", name, ix.Kernel)
		}
		out.Modules[name] = cloneModule(m)
		for _, d := range m.Depends {
			if err := add(d, name); err != nil {
				return err
			}
		}
		for _, s := range m.SoftPre {
			for _, r := range ix.Resolve(s) {
				if err := add(r, name); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for _, n := range names {
		if err := add(n, ""); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func cloneModule(m *Module) *Module {
	c := *m
	c.Depends = append([]string{}, m.Depends...)
	c.Aliases = append([]string{}, m.Aliases...)
	if m.SoftPre != nil {
		c.SoftPre = append([]string{}, m.SoftPre...)
	}
	return &c
}

// Resolve returns the names of the modules called nameOrAlias (with '-'
// read as '_') or having an alias pattern that matches it as a whole
// (path.Match; modaliases hold no '/'), sorted, each once. Nil when none.
func (ix *Index) Resolve(nameOrAlias string) []string {
	q := normalizeAlias(nameOrAlias)
	seen := map[string]bool{}
	if _, ok := ix.Modules[Normalize(nameOrAlias)]; ok {
		seen[Normalize(nameOrAlias)] = true
	}
	for name, m := range ix.Modules {
		if seen[name] {
			continue
		}
		for _, a := range m.Aliases {
			if ok, err := path.Match(normalizeAlias(a), q); err == nil && ok {
				seen[name] = true
				break
			}
		}
	}
	if len(seen) == 0 {
		return nil
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// LoadOrder returns the modules to load, in order, so that names end up
// loaded: each module's depends= (and the modules its softdep pre: entries
// resolve to in this index) come before it, every module appears once.
// A name or a depends= entry the index lacks is an error; soft
// dependencies the index lacks are skipped.
func (ix *Index) LoadOrder(names ...string) ([]string, error) {
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var order []string
	var visit func(name, neededBy string, soft bool) error
	visit = func(name, neededBy string, soft bool) error {
		switch state[name] {
		case done:
			return nil
		case visiting:
			if soft {
				return nil // a softdep loop: the hard order still holds
			}
			return fmt.Errorf("kernel %s: module dependency loop through %s: the module index is broken, rebuild the live image", ix.Kernel, name)
		}
		m, ok := ix.Modules[name]
		if !ok {
			if neededBy != "" {
				return fmt.Errorf("module %s (needed by %s) is not in the module index of kernel %s: rebuild the live image with bty-media", name, neededBy, ix.Kernel)
			}
			return fmt.Errorf("module %q is not in the module index of kernel %s", name, ix.Kernel)
		}
		state[name] = visiting
		for _, d := range m.Depends {
			if err := visit(Normalize(d), name, false); err != nil {
				return err
			}
		}
		for _, s := range m.SoftPre {
			for _, r := range ix.Resolve(s) {
				if r == name {
					continue
				}
				if err := visit(r, name, true); err != nil {
					return err
				}
			}
		}
		state[name] = done
		order = append(order, name)
		return nil
	}
	for _, n := range names {
		if err := visit(Normalize(n), "", false); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// ReadIndex reads an index written by Write.
func ReadIndex(p string) (*Index, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("reading the module index: %w", err)
	}
	var ix Index
	if err := json.Unmarshal(b, &ix); err != nil {
		return nil, fmt.Errorf("module index %s is damaged: %w (rebuild the live image with bty-media)", p, err)
	}
	if ix.Modules == nil {
		return nil, fmt.Errorf("module index %s lists no modules: rebuild the live image with bty-media", p)
	}
	for name, m := range ix.Modules {
		if m == nil || m.Name != name || m.Path == "" {
			return nil, fmt.Errorf("module index %s: entry %q is incomplete: rebuild the live image with bty-media", p, name)
		}
	}
	return &ix, nil
}

// Marshal returns the index as JSON (keys sorted, so the bytes depend only
// on the contents), ending in a newline.
func (ix *Index) Marshal() ([]byte, error) {
	if ix.Modules == nil {
		return nil, errors.New("module index has no module map")
	}
	b, err := json.MarshalIndent(ix, "", " ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Write stores the index as JSON at p (written to a temporary name in the
// same directory and renamed into place).
func (ix *Index) Write(p string) error {
	b, err := ix.Marshal()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".bty-modules-*.json")
	if err != nil {
		return fmt.Errorf("writing the module index: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("writing the module index %s: %w", p, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing the module index %s: %w", p, err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return fmt.Errorf("writing the module index: %w", err)
	}
	return nil
}
