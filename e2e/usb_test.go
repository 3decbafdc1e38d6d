package e2e

// TestUSBBootTUI (BTY_VMTEST=1, root) boots the USB stick image bty-media
// builds, as a removable USB mass-storage device on an xHCI controller of
// a UEFI QEMU guest with a blank virtio disk: the live env mounts the
// stick's BTY_IMAGES partition and bty-tui shows its image list on the
// serial console. When exfat-fuse can mount the partition here (the host
// kernel has no exfat), the test first copies a small image onto it,
// then drives bty-tui through the serial console like an operator (the
// image, /dev/vda, provisioning none, "yes") and checks the target disk
// holds the image bit for bit. Booting must leave the stick unchanged.

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/imagetest"
)

const usbImageName = "bty-e2e-pattern.img"

func TestUSBBootTUI(t *testing.T) {
	needVMTest(t, "boots the bty-media USB image in a UEFI guest and drives bty-tui on its serial console (about 3 minutes)",
		toolQEMU, toolOVMF, toolLosetup)
	repo := repoRoot(t)
	tmp := t.TempDir()

	stick := filepath.Join(tmp, "usb.img")
	mediaTook := runBtyMedia(t, repo, "usb", "--out", stick, "--images-size", "512MiB", "--cache", filepath.Join(repo, ".cache", "bty-media"))
	parts := gptPartitions(t, stick)
	findPart(t, parts, "BTY_LIVE")
	imagesPart := findPart(t, parts, "BTY_IMAGES")
	if imagesPart.bytes != 512<<20 {
		t.Errorf("BTY_IMAGES is %d bytes, want --images-size 512MiB", imagesPart.bytes)
	}

	// An image on the stick, when exfat-fuse works here.
	var imgSum string
	const imgSize = 24 << 20
	if dir, release, why := exfatMount(t, stick, imagesPart); why != "" {
		t.Logf("not copying an image onto the stick, so not flashing from it: %s", why)
	} else {
		src := filepath.Join(tmp, usbImageName)
		imgSum = patternImage(t, src, imgSize)
		copyFile(t, src, filepath.Join(dir, usbImageName))
		release()
		t.Logf("copied %s (sha256 %s) onto BTY_IMAGES with exfat-fuse", usbImageName, imgSum)
	}
	stickSum := imagetest.SHA256(t, stick, 0, fileSize(t, stick))

	target := filepath.Join(tmp, "target.raw")
	sparseFile(t, target, 256<<20)
	vars := copyVars(t, tmp)
	v := startVM(t, "usb", "", vars, 1024, 8*time.Minute,
		"-nic", "none",
		"-device", "qemu-xhci",
		"-drive", "if=none,id=stick,format=raw,file="+stick,
		"-device", "usb-storage,drive=stick,removable=on,bootindex=1",
		"-drive", "if=none,id=t0,format=raw,file="+target,
		"-device", "virtio-blk-pci,drive=t0",
		"-device", "virtio-rng-pci")
	var phases []phase
	media := fmt.Sprintf("MEDIA bty-media-usb %ds", int(mediaTook.Round(time.Second).Seconds()))
	defer func() { reportPhases(t, phases, media) }()
	live := v.expect(t, `bty-live: starting \(usb, bty .+, kernel \S+\)`, 4*time.Minute)
	phases = append(phases, phase{"usb-to-live-env", live.at})
	v.expect(t, `bty-live: images partition BTY_IMAGES mounted at /var/lib/bty/images\b`, 2*time.Minute)

	// bty-tui's first screen: the title, step 1 and its help line; then
	// the stick's image in the list (the catalog may be read after the
	// first frame, which only the changed rows redraw).
	screens := []string{`(?s)bty-tui.*Step 1/5 [-·] Choose an image.*enter choose`}
	if imgSum != "" {
		screens = append(screens, `(?s)Step 1/5 [-·] Choose an image.*`+regexp.QuoteMeta(usbImageName)+`\s+raw\s`)
	}
	for _, screen := range screens {
		if _, err := v.waitTextFrom(regexp.MustCompile(screen), 0, 2*time.Minute); err != nil {
			t.Fatalf("no bty-tui image screen on the serial console (/%s/): %v; serial tail:\n%s", screen, err, tail(v.serial.Text(), 3000))
		}
	}
	tuiAt := time.Since(v.start)
	phases = append(phases, phase{"usb-to-tui", tuiAt})
	t.Logf("bty-tui's image screen on the serial console after %s", tuiAt.Round(time.Second))
	if imgSum == "" {
		v.stop()
		checkUnchanged(t, stick, stickSum)
		return
	}

	// The operator's part, keys on the serial console.
	step := func(pattern string, keys string, timeout time.Duration) {
		t.Helper()
		off := v.serial.rawLen()
		v.send(t, keys)
		if _, err := v.waitTextFrom(regexp.MustCompile(pattern), off, timeout); err != nil {
			t.Fatalf("after sending %q: no /%s/ on the serial console: %v; serial tail:\n%s", keys, pattern, err, tail(v.serial.TextFrom(off), 3000))
		}
	}
	off := v.serial.rawLen()
	step(`Step 2/5 [-·] Choose the target disk for `+regexp.QuoteMeta(usbImageName), "\r", time.Minute)
	// Move the cursor to /dev/vda: its line "/dev/vda: everything on it
	// will be replaced" shows once it is the selected disk.
	vdaChosen := regexp.MustCompile(`/dev/vda: everything on it will be replaced by ` + regexp.QuoteMeta(usbImageName))
	for i := 0; ; i++ {
		if _, err := v.waitTextFrom(vdaChosen, off, 5*time.Second); err == nil {
			break
		}
		if i == 6 {
			t.Fatalf("could not select /dev/vda in bty-tui's disk list; serial since:\n%s", tail(v.serial.TextFrom(off), 3000))
		}
		off = v.serial.rawLen()
		v.send(t, "j")
	}
	step(`Step 3/5 [-·] Provisioning`, "\r", 30*time.Second)
	// The cursor starts on none; the confirm screen shows the plan once
	// it is checked, then takes "yes".
	step(`(?s)Step 4/5 [-·] Confirm.*This will ERASE /dev/vda`, "\r", time.Minute)
	step(`Type yes to flash: yes`, "yes", 30*time.Second)
	flashStart := time.Since(v.start)
	step(`Flashed `+regexp.QuoteMeta(usbImageName)+` onto /dev/vda`, "\r", 3*time.Minute)
	phases = append(phases, phase{"usb-tui-flash", time.Since(v.start) - flashStart})
	v.stop()

	if got := imagetest.SHA256(t, target, 0, imgSize); got != imgSum {
		t.Errorf("the target disk's first %d bytes have sha256 %s, want the image's %s", imgSize, got, imgSum)
	}
	checkUnchanged(t, stick, stickSum)
}

// checkUnchanged fails if booting the stick changed it (docs/reference.md,
// "USB live layout": booting the stick never changes it).
func checkUnchanged(t *testing.T, stick, before string) {
	t.Helper()
	if got := imagetest.SHA256(t, stick, 0, fileSize(t, stick)); got != before {
		t.Errorf("booting the stick changed it: sha256 %s before, %s after", before, got)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatalf("copying %s to %s: %v", src, dst, err)
	}
	if err := out.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatalf("closing %s: %v", dst, err)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}
