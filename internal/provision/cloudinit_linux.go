package provision

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/btyproject/bty/internal/layout"
)

// cloudInit finds the filesystem holding /etc/cloud (mounting each Linux
// filesystem read-only in turn) and writes the NoCloud seed into it.
func (s *session) cloudInit(tbl *layout.Table) error {
	var (
		found    *mounted
		tried    []string
		problems []string
	)
	for _, p := range tbl.Partitions {
		if why := unsupportedRoot(p.Filesystem); why != "" {
			problems = append(problems, fmt.Sprintf("%s is %s", p.Name(), why))
			continue
		}
		if !isLinuxRoot(p.Filesystem) {
			continue
		}
		if err := s.ctx.Err(); err != nil {
			return fmt.Errorf("provisioning interrupted: %w", err)
		}
		mp, err := s.mount(p, mountProbe, "")
		if err != nil {
			problems = append(problems, err.Error())
			if rerr := s.release(); rerr != nil {
				return rerr
			}
			continue
		}
		tried = append(tried, describe(p))
		sub, ok := findRoot(mp.m.Dir, p.Filesystem)
		if ok && isDir(path.Join(mp.m.Dir, sub, "etc/cloud")) {
			mp.sub = sub
			found = mp
			break
		}
		if err := s.release(); err != nil {
			return err
		}
	}
	if found == nil {
		msg := "no partition of " + s.disk.Path + " holds /etc/cloud, so nothing would read a cloud-init seed; no seed was written"
		if len(tried) > 0 {
			msg += " (looked in " + strings.Join(tried, ", ") + ")"
		} else {
			msg += " (no partition has a Linux filesystem bty can mount)"
		}
		if len(problems) > 0 {
			msg += "; also: " + strings.Join(problems, "; ")
		}
		if s.opts.SeedOptional {
			s.skipSeed("the image has no cloud-init", msg)
			return nil
		}
		return errors.New(msg + ". Use an image with cloud-init installed, or --provision none")
	}
	p := found.part
	s.res.Partition, s.res.Device, s.res.Filesystem, s.res.Subvolume = p.Number, found.vol.Via(), p.Filesystem, found.sub
	where := describe(p)
	if found.sub != "" {
		where += ", subvolume " + found.sub
	}
	s.note("cloud-init found on %s via %s", where, found.vol.Via())

	root, err := os.OpenRoot(found.root())
	if err != nil {
		return fmt.Errorf("opening the root of %s: %w", p.Name(), err)
	}
	defer root.Close()
	if _, err := root.Lstat("etc/cloud/cloud-init.disabled"); err == nil {
		if s.opts.SeedOptional {
			s.skipSeed("cloud-init is disabled in this image", fmt.Sprintf("/etc/cloud/cloud-init.disabled is on %s, so cloud-init would ignore a seed; no seed was written", p.Name()))
			return nil
		}
		return fmt.Errorf("cloud-init is disabled in this image (/etc/cloud/cloud-init.disabled on %s), so it would ignore a seed; no seed was written. Enable cloud-init in the image or use --provision none", p.Name())
	}
	if mnt := separateVar(root); mnt != "" {
		return fmt.Errorf("the image mounts %s from another filesystem (its /etc/fstab), which would hide a seed written to the root on %s; no seed was written. bty seeds only images whose /var/lib/cloud is on the root filesystem", mnt, p.Name())
	}

	s.res.DefaultUser = s.defaultUser(root)

	hostname := s.opts.Hostname
	if hostname == "" && s.opts.MetaData == nil {
		hostname = imageHostname(root)
		if hostname == "" {
			hostname = "localhost"
			s.note("the image has no usable /etc/hostname; local-hostname is %s (set one with --hostname)", hostname)
		}
	}
	iid := NewInstanceID()
	meta, err := MetaData(s.opts.MetaData, hostname, iid)
	if err != nil {
		return err
	}
	var md map[string]any
	if err := unmarshalYAML(meta, &md); err == nil {
		s.res.InstanceID, _ = md["instance-id"].(string)
		s.res.Hostname, _ = md["local-hostname"].(string)
	}

	if err := found.m.remountRW(); err != nil {
		return err
	}
	if list, file := datasourceList(root); list != nil && !slices.Contains(list, "NoCloud") {
		// The image names its datasources and NoCloud is not among them:
		// cloud-init would never read the seed. Put NoCloud first.
		const override = "etc/cloud/cloud.cfg.d/99-bty-nocloud.cfg"
		body := fmt.Sprintf("# Written by bty: the seed in %s needs the NoCloud datasource.\ndatasource_list: [ %s ]\n",
			SeedDir, strings.Join(append([]string{"NoCloud"}, list...), ", "))
		if err := writeFile(root, override, []byte(body), 0o644); err != nil {
			return err
		}
		s.res.Notes = append(s.res.Notes, fmt.Sprintf("the image's datasource_list (%s) lacked NoCloud; bty added /%s putting it first", file, override))
	}
	seed := strings.TrimPrefix(SeedDir, "/")
	if err := root.MkdirAll(seed, 0o755); err != nil {
		return fmt.Errorf("creating %s on %s: %w", SeedDir, p.Name(), err)
	}
	if err := writeFile(root, seed+"/user-data", s.opts.UserData, 0o600); err != nil {
		return err
	}
	if err := writeFile(root, seed+"/meta-data", meta, 0o600); err != nil {
		return err
	}
	vendor := ""
	if s.opts.VendorData != nil {
		// The image author's vendor-data is theirs: cloud-init reads one
		// vendor-data, so writing bty's would drop it.
		if _, err := root.Lstat(seed + "/vendor-data"); err == nil {
			s.res.ImageVendorData = true
			s.res.Notes = append(s.res.Notes, fmt.Sprintf("the image's %s already holds a vendor-data, kept as it is; bty's vendor-data was not written", SeedDir))
		} else {
			if err := writeFile(root, seed+"/vendor-data", s.opts.VendorData, 0o600); err != nil {
				return err
			}
			vendor = fmt.Sprintf(", vendor-data (%d bytes)", len(s.opts.VendorData))
		}
	}
	if names := extraSeedFiles(root, seed, vendor != ""); len(names) > 0 {
		s.res.Notes = append(s.res.Notes, fmt.Sprintf("the image's %s also holds %s, left as they were", SeedDir, strings.Join(names, ", ")))
	}
	s.res.SeedDir = SeedDir
	if s.res.DefaultUser != "" {
		s.note("the image's cloud-init default user is %s", s.res.DefaultUser)
	}
	s.note("wrote %s/user-data (%d bytes)%s and meta-data (instance-id %s, local-hostname %s) on %s",
		SeedDir, len(s.opts.UserData), vendor, s.res.InstanceID, s.res.Hostname, p.Name())
	return nil
}

// skipSeed records, under Options.SeedOptional, that no seed was
// written because the image has no usable cloud-init (what), and why.
func (s *session) skipSeed(what, why string) {
	n := what + ": bty-web's SSH key was not seeded; the image must authorise it itself (" + why + ")"
	s.res.Notes = append(s.res.Notes, n)
	s.note("%s", n)
}

// Bounds on reading the image's cloud-init configuration.
const (
	maxCloudCfgBytes = 1 << 20 // per file
	maxCloudCfgFiles = 100     // cloud.cfg.d/*.cfg files read
)

// cloudConfigFiles are the image's cloud-init configuration files in the
// order cloud-init reads them: etc/cloud/cloud.cfg, then
// etc/cloud/cloud.cfg.d/*.cfg in lexical order (later files win), at
// most maxCloudCfgFiles of the latter.
func cloudConfigFiles(root *os.Root) (files []string, truncated bool) {
	files = []string{"etc/cloud/cloud.cfg"}
	if d, err := root.Open("etc/cloud/cloud.cfg.d"); err == nil {
		names, _ := d.Readdirnames(-1)
		d.Close()
		sort.Strings(names)
		for _, n := range names {
			if !strings.HasSuffix(n, ".cfg") {
				continue
			}
			if len(files) > maxCloudCfgFiles {
				return files, true
			}
			files = append(files, "etc/cloud/cloud.cfg.d/"+n)
		}
	}
	return files, false
}

// readCloudConfig reads one configuration file under root, at most
// maxCloudCfgBytes; ok is false when it is absent.
func readCloudConfig(root *os.Root, name string) (b []byte, ok bool, err error) {
	f, err := root.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return nil, false, err
	} else if !st.Mode().IsRegular() {
		return nil, false, fmt.Errorf("not a regular file")
	}
	b, err = io.ReadAll(io.LimitReader(f, maxCloudCfgBytes+1))
	if err != nil {
		return nil, false, err
	}
	if len(b) > maxCloudCfgBytes {
		return nil, false, fmt.Errorf("larger than %d bytes", maxCloudCfgBytes)
	}
	return b, true, nil
}

// defaultUser is the image's cloud-init default user: the last
// system_info.default_user.name set by cloud.cfg and cloud.cfg.d/*.cfg
// (cloud-init merges them, later files winning key by key). Files that
// cannot be read or parsed are skipped with a note; a name that is not
// a plain user name is dropped with a note.
func (s *session) defaultUser(root *os.Root) string {
	files, truncated := cloudConfigFiles(root)
	if truncated {
		s.res.Notes = append(s.res.Notes, fmt.Sprintf("the image's /etc/cloud/cloud.cfg.d has more than %d .cfg files; only the first %d were read for the default user", maxCloudCfgFiles, maxCloudCfgFiles))
	}
	name, from := "", ""
	for _, f := range files {
		b, ok, err := readCloudConfig(root, f)
		if err != nil {
			s.res.Notes = append(s.res.Notes, fmt.Sprintf("the image's /%s was ignored when looking for cloud-init's default user: %v", f, err))
			continue
		}
		if !ok {
			continue
		}
		var doc struct {
			SystemInfo struct {
				DefaultUser struct {
					Name any `yaml:"name"`
				} `yaml:"default_user"`
			} `yaml:"system_info"`
		}
		if err := unmarshalYAML(b, &doc); err != nil {
			// A file whose system_info is not a mapping does not parse
			// into doc either: cloud-init would not read a default
			// user from it.
			s.res.Notes = append(s.res.Notes, fmt.Sprintf("the image's /%s does not parse as cloud-init configuration (%s); ignored when looking for the default user", f, yamlMessage(err)))
			continue
		}
		if n, ok := doc.SystemInfo.DefaultUser.Name.(string); ok && n != "" {
			name, from = n, "/"+f
		}
	}
	if name != "" && !validUserName(name) {
		s.res.Notes = append(s.res.Notes, fmt.Sprintf("the image's default user %q (%s) is not a plain user name; not reported", name, from))
		return ""
	}
	return name
}

// validUserName accepts a plain user name: 1-32 bytes of letters,
// digits, '.', '_' and '-', not starting with '-' or '.'.
func validUserName(s string) bool {
	if s == "" || len(s) > 32 || s[0] == '-' || s[0] == '.' {
		return false
	}
	return strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == ""
}

// writeFile writes data to name under root, synced, with mode perm,
// owned by root. Symlinks leaving root are refused by os.Root.
func writeFile(root *os.Root, name string, data []byte, perm fs.FileMode) error {
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return fmt.Errorf("writing /%s: %w", name, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing /%s: %w", name, err)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("writing /%s: %w", name, err)
	}
	_ = f.Chown(0, 0)
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("writing /%s: %w", name, err)
	}
	return f.Close()
}

// imageHostname is the image's /etc/hostname when it is a valid name.
func imageHostname(root *os.Root) string {
	b, err := root.ReadFile("etc/hostname")
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(b), "\n")
	h := strings.TrimSpace(line)
	if CheckHostname(h) != nil {
		return ""
	}
	return h
}

// separateVar returns the mount point in the image's /etc/fstab that
// would hide the seed directory (/var, /var/lib, ...), or "".
func separateVar(root *os.Root) string {
	b, err := root.ReadFile("etc/fstab")
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		mnt := path.Clean(f[1])
		if mnt != "/" && strings.HasPrefix(SeedDir+"/", mnt+"/") {
			if len(f) >= 4 && slices.Contains(strings.Split(f[3], ","), "noauto") {
				continue
			}
			return mnt
		}
	}
	return ""
}

// datasourceList is the image's effective datasource_list (cloud.cfg,
// then cloud.cfg.d/*.cfg in name order, the last setting wins) and the
// file that set it; nil when none sets it (cloud-init then tries all,
// NoCloud included).
func datasourceList(root *os.Root) ([]string, string) {
	files, _ := cloudConfigFiles(root)
	var list []string
	var from string
	for _, name := range files {
		b, ok, err := readCloudConfig(root, name)
		if err != nil || !ok {
			continue
		}
		var doc struct {
			DatasourceList any `yaml:"datasource_list"`
		}
		if unmarshalYAML(b, &doc) != nil || doc.DatasourceList == nil {
			continue
		}
		var l []string
		switch v := doc.DatasourceList.(type) {
		case []any:
			for _, e := range v {
				if s, ok := e.(string); ok {
					l = append(l, strings.TrimSpace(s))
				}
			}
		case string:
			for _, e := range strings.Split(strings.Trim(v, "[] "), ",") {
				l = append(l, strings.TrimSpace(e))
			}
		}
		list, from = l, "/"+name
	}
	return list, from
}

// extraSeedFiles lists files in the seed directory other than those bty
// wrote (network-config, vendor-data from the image's author);
// wroteVendor says bty wrote vendor-data.
func extraSeedFiles(root *os.Root, seed string, wroteVendor bool) []string {
	d, err := root.Open(seed)
	if err != nil {
		return nil
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	var extra []string
	for _, n := range names {
		if n != "user-data" && n != "meta-data" && (n != "vendor-data" || !wroteVendor) {
			extra = append(extra, n)
		}
	}
	sort.Strings(extra)
	return extra
}
