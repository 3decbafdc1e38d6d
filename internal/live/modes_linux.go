package live

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/btyproject/bty/internal/client"
	"github.com/btyproject/bty/internal/disk"
	"github.com/btyproject/bty/internal/event"
	"github.com/btyproject/bty/internal/flash"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/human"
	"github.com/btyproject/bty/internal/provision"
)

const (
	tuiBinary = "/bin/bty-tui"
	webBinary = "/bin/bty-web"
	ipxeDir   = "/usr/lib/ipxe"
)

// flashMode flashes the assigned image onto the primary disk, reports
// done and reboots; on failure it reports why, waits and reboots.
func (s *system) flashMode(ctx context.Context) {
	s.ensureNetwork(ctx)
	s.reportInventory(ctx)
	start := time.Now()
	res, err := s.flashOnce(ctx)
	if err != nil {
		s.say("FLASH FAILED: %v", err)
		s.reportFailed(ctx, err.Error())
		s.retryLater(ctx)
		return
	}
	totals := fleet.Progress{Image: imageName(s.params.ImageURL), BytesWritten: res.BytesWritten,
		TotalBytes: res.TotalBytes, Rate: res.Rate, SHA256: res.SHA256,
		BytesFetched: res.BytesFetched, ChunksTotal: res.ChunksTotal, ChunksZero: res.ChunksZero, ChunksEqual: res.ChunksEqual}
	if res.Provision != nil {
		// Who cloud-init gives bty-web's key to: bty-web logs in as them.
		totals.OSUser = res.Provision.DefaultUser
	}
	s.reportDone(ctx, totals)
	s.log.Info("live env finished", "since_boot", time.Since(s.started), "flash", time.Since(start))
	s.reboot()
}

// flashOnce flashes the machine's image, reporting progress to the
// server as it goes, and returns the engine's result.
func (s *system) flashOnce(ctx context.Context) (*flash.Result, error) {
	p := s.params
	c, err := client.New(p.Server)
	if err != nil {
		return nil, err
	}
	target, err := s.waitTarget(p.Target)
	if err != nil {
		return nil, err
	}
	console := newConsoleSink(s.out)
	console.size = p.ImageSize
	reporter := clientReporter(ctx, c, p.MAC, p.Cycle, imageName(p.ImageURL), p.ImageSize, s.log)
	defer reporter.Close()
	opts := flash.Options{Image: p.ImageURL, Target: target.Path, Provision: p.Provisioning,
		Hostname: p.Hostname, SHA256: p.SHA256, Verify: p.SHA256 != "", LogDir: logDir,
		// A reflash writes only what changed when bty-web has the
		// image's chunk store (and the disk an older copy); without
		// one, the engine flashes in full and says why.
		Delta: p.SHA256 != "",
		Sink:  event.Multi(console, reporter), Logger: s.log}
	online := p.Provisioning == fleet.ModeCijoeOnline
	if p.Provisioning == fleet.ModeCloudInit || online {
		if opts.UserData, opts.MetaData, err = s.fetchSeed(ctx, c, online); err != nil {
			return nil, err
		}
		vd, err := vendorData(p)
		if err != nil {
			return nil, err
		}
		if vd != nil {
			opts.VendorData = flash.Input{Path: "(bty's vendor-data)", Data: vd}
		}
	}
	if online {
		// cijoe-online seeds cloud-init for bty-web's key, best effort:
		// an image without cloud-init flashes all the same, and must
		// authorise the key itself.
		opts.Provision, opts.SeedOptional = fleet.ModeCloudInit, true
		if p.SSHKey != "" && userDataSetsKeys(opts.UserData.Data) {
			s.say("the machine's user-data sets ssh_authorized_keys, which replaces vendor-data's: bty-web's key reaches the OS only if the user-data lists it too")
		}
	}
	what := human.Bytes(target.SizeBytes)
	if target.Model != "" {
		what = strings.TrimSpace(target.Model) + ", " + what
	}
	s.say("flashing %s onto %s (%s)", p.ImageURL, target.Path, what)
	res, err := flash.Run(ctx, opts)
	if err != nil {
		return nil, err
	}
	if p.SHA256 != "" {
		s.say("verified sha256 %s", res.SHA256)
	}
	for _, n := range res.Notes {
		s.log.Info("flash note", "note", n)
	}
	switch {
	case online:
		s.sayOnline(res.Provision)
	case opts.VendorData.IsZero():
	case res.Provision != nil && res.Provision.ImageVendorData:
		s.say("the image has its own vendor-data; the OS will not phone home: set ready_check tcp:22 for this machine")
	default:
		s.say("seeded cloud-init's phone_home: the flashed OS reports ready to %s", p.Server)
	}
	s.say("flash done in %s (%s, %s/s)", time.Duration(res.Elapsed*float64(time.Second)).Round(100*time.Millisecond),
		human.Bytes(res.TotalBytes), human.Bytes(int64(res.Rate)))
	return res, nil
}

// sayOnline says on the consoles what a cijoe-online flash seeded:
// bty-web's SSH key, for whom, and phone_home.
func (s *system) sayOnline(prov *provision.Result) {
	p := s.params
	switch {
	case prov == nil || prov.SeedDir == "":
		said := false
		if prov != nil {
			for _, n := range prov.Notes {
				if strings.Contains(n, "SSH key was not seeded") {
					s.say("%s", n)
					said = true
				}
			}
		}
		if !said {
			s.say("the image has no cloud-init: bty-web's SSH key was not seeded; the image must authorise it itself")
		}
		if p.PhoneHome {
			s.say("without cloud-init the OS will not phone home either: set ready_check tcp:22 for this machine")
		}
	case prov.ImageVendorData:
		s.say("the image has its own vendor-data, kept: bty-web's SSH key was not seeded (nor phone_home); the image must authorise the key itself")
	default:
		if p.SSHKey == "" {
			s.say("no bty.ssh_key on the kernel line: bty-web's SSH key was not seeded (bty-web has no key, or is older than this live env)")
		} else if prov.DefaultUser != "" {
			s.say("seeded bty-web's SSH key for the image's default user %s", prov.DefaultUser)
		} else {
			s.say("seeded bty-web's SSH key; the image's cloud.cfg names no default user, so cloud-init may give it to no user bty-web can log in as")
		}
		if p.PhoneHome {
			s.say("seeded cloud-init's phone_home: the flashed OS reports ready to %s", p.Server)
		}
	}
}

// waitTarget picks the disk to flash, giving slow storage drivers (NVMe,
// USB, a RAID HBA) time to show their disks.
func (s *system) waitTarget(want string) (disk.Disk, error) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		disks, err := disk.List()
		if err != nil {
			return disk.Disk{}, fmt.Errorf("listing disks: %w", err)
		}
		d, err := PickTarget(disks, want)
		if err == nil || time.Now().After(deadline) {
			return d, err
		}
		if s.mods != nil {
			s.mods.probe()
		}
		time.Sleep(time.Second)
	}
}

// fetchSeed fetches the machine's cloud-init seed from the server, as
// data for the engine, which checks it before anything is written. With
// optional (cijoe-online), a machine without user-data gets a bare
// #cloud-config: the seed carries bty's vendor-data.
func (s *system) fetchSeed(ctx context.Context, c *client.Client, optional bool) (userData, metaData flash.Input, err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ud, md, err := c.PXESeed(ctx, s.params.MAC, s.params.Cycle)
	if err != nil {
		return flash.Input{}, flash.Input{}, err
	}
	if ud == nil && optional {
		s.log.Info("the server has no user-data for this machine; seeding an empty #cloud-config", "mac", s.params.MAC)
		return flash.Input{Path: "(bty's empty user-data)", Data: []byte("#cloud-config\n")}, flash.Input{}, nil
	}
	if ud == nil {
		return flash.Input{}, flash.Input{}, fmt.Errorf("provisioning cloud-init: the server has no user-data for %s; set it with bty-ctl machines set %s --user-data FILE", s.params.MAC, s.params.MAC)
	}
	from := "(bty-web's seed for " + s.params.MAC.String() + ")"
	userData = flash.Input{Path: from, Data: ud}
	if md != nil {
		metaData = flash.Input{Path: from, Data: md}
	}
	return userData, metaData, nil
}

// reportDone tells the server the flash is done (so its next PXE contact
// boots the disk) with the flash's totals for its history, trying for a
// minute: the flash is good either way, and a machine whose report was
// lost is flashed again next boot.
func (s *system) reportDone(ctx context.Context, totals fleet.Progress) {
	c, err := client.New(s.params.Server)
	if err != nil {
		s.say("cannot report done: %v", err)
		return
	}
	deadline := time.Now().Add(time.Minute)
	for {
		err := c.PXEDone(ctx, s.params.MAC, s.params.Cycle, totals)
		if err == nil {
			s.say("reported done to %s", s.params.Server)
			return
		}
		if client.IsForbidden(err) || time.Now().After(deadline) {
			s.say("could not report done to %s: %v (the next PXE boot flashes again)", s.params.Server, err)
			return
		}
		time.Sleep(5 * time.Second)
	}
}

// reportFailed tells the server why the flash failed; it shows on the
// machine's record. Best effort.
func (s *system) reportFailed(ctx context.Context, reason string) {
	if s.params.Server == "" || s.params.MAC.IsZero() {
		return
	}
	c, err := client.New(s.params.Server)
	if err != nil {
		return
	}
	for try := 0; try < 3; try++ {
		if err = c.PXEFailed(ctx, s.params.MAC, s.params.Cycle, reason); err == nil {
			s.say("reported the failure to %s", s.params.Server)
			return
		}
		if client.IsForbidden(err) {
			break
		}
		time.Sleep(3 * time.Second)
	}
	s.say("could not report the failure to %s: %v", s.params.Server, err)
}

// interactiveMode runs bty-tui against the server on every console.
func (s *system) interactiveMode(ctx context.Context) {
	s.ensureNetwork(ctx)
	s.reportInventory(ctx)
	args := []string{"--server", s.params.Server}
	if !s.params.MAC.IsZero() {
		args = append(args, "--mac", s.params.MAC.String())
	}
	if s.params.Cycle != "" {
		args = append(args, "--cycle", s.params.Cycle)
	}
	s.tuiOnConsoles(ctx, args...)
}

// usbMode mounts the stick's BTY_IMAGES partition and runs bty-tui on
// the local catalog. The stick's live env partition is never mounted.
func (s *system) usbMode(ctx context.Context) {
	dev, parent, err := s.waitPartition("BTY_IMAGES", 30*time.Second)
	if err != nil {
		s.say("%v; bty-tui starts with an empty catalog", err)
	} else {
		// The stick carries the live env: never a flash target.
		_ = os.Setenv(disk.LiveDiskEnv, "/dev/"+parent)
		if err := s.mount(dev, imagesDir, "exfat", unix.MS_RDONLY|unix.MS_NOATIME|unix.MS_NODEV|unix.MS_NOSUID); err != nil {
			s.say("mounting %s (BTY_IMAGES) at %s: %v; bty-tui starts with an empty catalog", dev, imagesDir, err)
		} else {
			s.say("images partition BTY_IMAGES mounted at %s (read-only)", imagesDir)
		}
	}
	s.tuiOnConsoles(ctx, "--image-root", imagesDir)
}

// serverMode mounts BTY_STATE and runs bty-web on it with TFTP and
// proxy-DHCP on the interface that got the network.
func (s *system) serverMode(ctx context.Context) {
	dev, _, err := s.waitPartition("BTY_STATE", 30*time.Second)
	if err != nil {
		s.rescue(err.Error() + "; bty-web needs its state partition")
	}
	if err := s.mount(dev, stateDir, "ext4", unix.MS_NOATIME|unix.MS_NODEV|unix.MS_NOSUID); err != nil {
		s.rescue(fmt.Sprintf("mounting %s (BTY_STATE) at %s: %v", dev, stateDir, err))
	}
	s.say("state partition BTY_STATE mounted at %s", stateDir)
	for _, d := range []string{"images", "boot"} {
		_ = os.MkdirAll(filepath.Join(stateDir, d), 0o755)
	}
	l := s.ensureNetwork(ctx)
	go s.keepLease(ctx, l)
	go s.shellOnEnter(ctx)
	for {
		cmd := exec.CommandContext(ctx, webBinary)
		cmd.Stdout, cmd.Stderr = s.out, s.out
		cmd.Env = append(os.Environ(),
			"BTY_STATE_DIR="+stateDir,
			"BTY_IMAGE_ROOT="+filepath.Join(stateDir, "images"),
			"BTY_BOOT_DIR="+filepath.Join(stateDir, "boot"),
			"BTY_IPXE_DIR="+ipxeDir,
			"BTY_PROXYDHCP_IFACE="+l.Iface)
		if err := cmd.Start(); err != nil {
			s.rescue("starting bty-web: " + err.Error())
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		// Say where it is once it answers, not before.
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
			if c, err := net.DialTimeout("tcp", "127.0.0.1:8080", time.Second); err == nil {
				c.Close()
				s.say("bty-web running on http://%s:8080 (browser UI at /ui; press Enter for a shell)", l.Addr.IP)
				break
			}
			if len(exited) > 0 {
				break
			}
		}
		err := <-exited
		s.say("bty-web exited: %v; starting it again in 5 s", err)
		time.Sleep(5 * time.Second)
	}
}

// shellOnEnter gives a shell on the console where someone presses Enter.
func (s *system) shellOnEnter(ctx context.Context) {
	for ctx.Err() == nil {
		if tty := s.out.waitEnter(time.Hour); tty != "" {
			s.runShell(ctx, tty)
		}
	}
}

// tuiOnConsoles runs bty-tui with args on every console, again after it
// ends (or a shell, if the human asks for one). It never returns.
func (s *system) tuiOnConsoles(ctx context.Context, args ...string) {
	if _, err := os.Stat(tuiBinary); err != nil {
		s.rescue("no bty-tui in this live env")
	}
	for _, tty := range s.out.ttys {
		go func() {
			for {
				err := s.runOn(ctx, tty, append([]string{tuiBinary}, args...))
				if err != nil {
					s.log.Info("bty-tui ended", "tty", tty, "err", err)
				}
				if s.askOn(tty, "bty-tui ended. Enter starts it again; type sh and Enter for a shell: ") == "sh" {
					s.runShell(ctx, tty)
				}
			}
		}()
	}
	select {}
}

// askOn prints prompt on tty and reads one line.
func (s *system) askOn(tty, prompt string) string {
	f, err := os.OpenFile(tty, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		time.Sleep(time.Second)
		return ""
	}
	defer f.Close()
	fmt.Fprint(f, "\r\n"+prompt)
	line, _ := bufio.NewReader(f).ReadString('\n')
	return strings.TrimSpace(line)
}

// mount mounts dev on dir as fstype, loading the filesystem's module.
func (s *system) mount(dev, dir, fstype string, flags uintptr) error {
	if s.mods != nil {
		if mods := s.mods.ix.Resolve("fs-" + fstype); len(mods) > 0 {
			if _, err := s.mods.load(mods...); err != nil {
				s.log.Warn("loading the filesystem's module", "fs", fstype, "err", err)
			}
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return unix.Mount(dev, dir, fstype, flags, "")
}

// waitPartition finds the partition whose GPT name is name (the USB
// stick or the appliance's disk may take a while to appear) and returns
// its device and its disk's kernel name.
func (s *system) waitPartition(name string, max time.Duration) (dev, parent string, err error) {
	deadline := time.Now().Add(max)
	for {
		if dev, parent, ok := findPartition(name); ok {
			return dev, parent, nil
		}
		if time.Now().After(deadline) {
			return "", "", errors.New("no partition named " + name + " found (is the stick or disk attached, and its driver in the live env?)")
		}
		if s.mods != nil {
			s.mods.probe()
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func findPartition(name string) (dev, parent string, ok bool) {
	entries, _ := os.ReadDir("/sys/class/block")
	for _, e := range entries {
		dir := filepath.Join("/sys/class/block", e.Name())
		for _, l := range strings.Split(readFile(filepath.Join(dir, "uevent")), "\n") {
			if l == "PARTNAME="+name {
				real, err := filepath.EvalSymlinks(dir)
				if err != nil {
					continue
				}
				return "/dev/" + e.Name(), filepath.Base(filepath.Dir(real)), true
			}
		}
	}
	return "", "", false
}
