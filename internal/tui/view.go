package tui

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"

	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/human"
)

type styles struct {
	plain    bool // no colours or attributes
	ascii    bool // the terminal may show only ASCII (vt100, dumb)
	title    lipgloss.Style
	heading  lipgloss.Style
	selected lipgloss.Style
	dim      lipgloss.Style
	warn     lipgloss.Style
	err      lipgloss.Style
	ok       lipgloss.Style
	help     lipgloss.Style
}

func newStyles() styles {
	plain := lipgloss.ColorProfile() == termenv.Ascii
	return styles{
		plain:    plain,
		ascii:    asciiTerm(os.Getenv("TERM")),
		title:    lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("12")),
		heading:  lipgloss.NewStyle().Bold(true),
		selected: lipgloss.NewStyle().Bold(true).Reverse(true),
		dim:      lipgloss.NewStyle().Faint(true),
		warn:     lipgloss.NewStyle().Foreground(lipgloss.Color("11")),
		err:      lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("9")),
		ok:       lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("10")),
		help:     lipgloss.NewStyle().Faint(true),
	}
}

// asciiTerm reports terminals that may not draw UTF-8 (serial consoles
// announce themselves as vt100 and friends).
func asciiTerm(term string) bool {
	return term == "" || term == "dumb" || strings.HasPrefix(term, "vt")
}

var asciiGlyphs = strings.NewReplacer("·", "-", "↑/↓", "up/down", "…", "...", "✓", "ok")

// fit cuts s to w display cells.
func fit(s string, w int) string {
	if w <= 0 {
		return ""
	}
	if lipgloss.Width(s) <= w {
		return s
	}
	r := []rune(s)
	for len(r) > 0 && lipgloss.Width(string(r)) > w-1 {
		r = r[:len(r)-1]
	}
	return string(r) + "~"
}

// View draws the screen: title, step heading, body, status, help.
func (m Model) View() string {
	if m.quitting {
		return ""
	}
	w, h := max(20, m.width), max(8, m.height)
	title := "bty-tui · " + m.cfg.Catalog.Describe()
	if !m.cfg.MAC.IsZero() {
		title += " · mac " + m.cfg.MAC.String()
	}
	head := []string{m.styles.title.Render(fit(title, w)), m.styles.heading.Render(fit(m.heading(), w)), ""}
	help := m.styles.help.Render(fit(m.help(), w))
	status := ""
	if m.status != "" {
		status = m.styles.warn.Render(fit(m.status, w))
	}
	bodyH := h - len(head) - 2
	body := m.body(w, bodyH)
	if len(body) > bodyH {
		body = body[:bodyH]
	}
	for len(body) < bodyH {
		body = append(body, "")
	}
	lines := append(append(head, body...), status, help)
	v := strings.Join(lines, "\n")
	if m.styles.ascii {
		v = asciiGlyphs.Replace(v)
	}
	return v
}

func (m Model) heading() string {
	switch m.step {
	case stepImages:
		return "Step 1/5 · Choose an image"
	case stepDisks:
		return "Step 2/5 · Choose the target disk for " + m.images[m.imgCursor].Name
	case stepProvision:
		return "Step 3/5 · Provisioning (first-boot setup of the flashed OS)"
	case stepConfirm:
		return "Step 4/5 · Confirm"
	case stepFlashing:
		return "Step 5/5 · Flashing " + m.images[m.imgCursor].Name + " onto " + m.flashOpts.Target
	default:
		return "Result"
	}
}

func (m Model) help() string {
	switch {
	case m.step == stepFlashing && m.askAbort:
		return "y abort · n keep flashing"
	case m.askReboot:
		return "y reboot now · any other key cancels"
	}
	switch m.step {
	case stepImages:
		return "↑/↓ move · enter choose · r reload · q quit"
	case stepDisks:
		return "↑/↓ move · enter choose · r rescan · esc/q back"
	case stepProvision:
		if m.editing {
			return "type a path · tab next field · enter go on · esc back to the modes"
		}
		return "↑/↓ move · enter choose · esc/q back"
	case stepConfirm:
		return "type yes, then enter to flash · esc back"
	case stepFlashing:
		return "ctrl+c abort"
	default:
		return "enter flash another · R reboot · q quit"
	}
}

func (m Model) body(w, h int) []string {
	switch m.step {
	case stepImages:
		return m.imagesBody(w, h)
	case stepDisks:
		return m.disksBody(w, h)
	case stepProvision:
		return m.provisionBody(w)
	case stepConfirm:
		return m.confirmBody(w)
	case stepFlashing:
		return m.flashingBody(w)
	default:
		return m.resultBody(w)
	}
}

// window returns the range of n rows to show so cursor is visible in h.
func window(cursor, n, h int) (int, int) {
	if n <= h {
		return 0, n
	}
	start := min(max(0, cursor-h/2), n-h)
	return start, start + h
}

func (m Model) row(selected bool, text string, w int) string {
	mark := "  "
	if selected {
		mark = "> "
	}
	s := fit(mark+text, w)
	if selected && !m.styles.plain {
		return m.styles.selected.Render(s)
	}
	return s
}

func (m Model) imagesBody(w, h int) []string {
	if m.loading {
		return []string{m.spin.View() + " reading the catalog…"}
	}
	if m.imagesErr != nil {
		return append(wrap(m.styles.err.Render("Cannot list images: ")+m.imagesErr.Error(), w), "", "Press r to try again.")
	}
	if len(m.images) == 0 {
		return wrap("No images in the catalog. Copy .img, .img.zst, .img.gz, .img.xz, .img.bz2 or .qcow2 files there (or upload them to the server) and press r.", w)
	}
	nameW := 10
	for _, im := range m.images {
		nameW = max(nameW, len([]rune(im.Name)))
	}
	nameW = min(nameW, w-40)
	out := []string{m.styles.dim.Render(fit(fmt.Sprintf("  %-*s  %-6s  %10s  %10s", nameW, "NAME", "FORMAT", "SIZE", "DISK SIZE"), w))}
	start, end := window(m.imgCursor, len(m.images), h-3)
	for i := start; i < end; i++ {
		im := m.images[i]
		virt := "?"
		if im.Virtual != nil {
			virt = human.Bytes(*im.Virtual)
		}
		text := fmt.Sprintf("%-*s  %-6s  %10s  %10s", nameW, fit(im.Name, nameW), im.Format, human.Bytes(im.Size), virt)
		if im.Err != "" {
			text += "  unusable: " + im.Err
		}
		out = append(out, m.row(i == m.imgCursor, text, w))
	}
	out = append(out, "", m.styles.dim.Render(fmt.Sprintf("%d image(s)", len(m.images))))
	return out
}

func (m Model) disksBody(w, h int) []string {
	if m.disks == nil && m.disksErr == nil {
		return []string{m.spin.View() + " looking for disks…"}
	}
	if m.disksErr != nil {
		return append(wrap(m.styles.err.Render("Cannot list disks: ")+m.disksErr.Error(), w), "", "Press r to try again.")
	}
	if len(m.disks) == 0 {
		return wrap("No disks found. Attach one and press r.", w)
	}
	out := []string{}
	start, end := window(m.diskCursor, len(m.disks), h-4)
	for i := start; i < end; i++ {
		d := m.disks[i]
		desc := []string{}
		for _, s := range []string{strings.TrimSpace(d.Vendor + " " + d.Model), d.Serial, d.Transport} {
			if s != "" {
				desc = append(desc, s)
			}
		}
		if d.Type == "loop" && d.BackingFile != "" {
			desc = append(desc, "loop of "+d.BackingFile)
		}
		text := fmt.Sprintf("%-14s %10s  %s", d.Path, human.Bytes(d.SizeBytes), strings.Join(desc, " · "))
		if p := d.Problems(); len(p) > 0 {
			text = fmt.Sprintf("%-14s %10s  not selectable: %s", d.Path, human.Bytes(d.SizeBytes), p[0])
			out = append(out, m.styles.dim.Render(m.row(i == m.diskCursor, text, w)))
			continue
		}
		out = append(out, m.row(i == m.diskCursor, text, w))
	}
	d := m.disks[m.diskCursor]
	out = append(out, "")
	if p := d.Problems(); len(p) > 0 {
		out = append(out, wrap(d.Path+" cannot be flashed: "+strings.Join(p, "; "), w)...)
	} else {
		img := m.images[m.imgCursor]
		if img.Virtual != nil && *img.Virtual > d.SizeBytes {
			out = append(out, m.styles.err.Render(fit(fmt.Sprintf("%s (%s) is smaller than the image (%s): the flash will be refused.", d.Path, human.Bytes(d.SizeBytes), human.Bytes(*img.Virtual)), w)))
		} else {
			out = append(out, m.styles.dim.Render(fit(fmt.Sprintf("%s: everything on it will be replaced by %s.", d.Path, img.Name), w)))
		}
	}
	return out
}

func (m Model) provisionBody(w int) []string {
	desc := map[fleet.Mode]string{
		fleet.ModeNone:      "none        boot the image as it is",
		fleet.ModeCloudInit: "cloud-init  seed user-data (and a hostname) for cloud-init's first boot",
		fleet.ModeCijoe:     "cijoe       run a cijoe workflow against the flashed root filesystem",
	}
	out := []string{}
	for i, mode := range provModes {
		out = append(out, m.row(i == m.provCursor, desc[mode], w))
	}
	if m.editing {
		out = append(out, "")
		for _, in := range m.inputs {
			out = append(out, fit(in.View(), w))
		}
	}
	return out
}

func (m Model) confirmBody(w int) []string {
	img, d := m.images[m.imgCursor], m.disks[m.diskCursor]
	if m.checking {
		return []string{m.spin.View() + " checking the image, the disk and the inputs…"}
	}
	out := []string{}
	if m.plan == nil {
		return append(out, wrap(m.styles.err.Render("Cannot plan the flash: ")+describeErr(m.planErr), w)...)
	}
	p := m.plan
	imgLine := "Image:  " + img.Name + " (" + img.Format + ", " + human.Bytes(img.Size)
	if p.Image.VirtualSizeBytes != nil {
		imgLine += ", " + human.Bytes(*p.Image.VirtualSizeBytes) + " on disk"
	}
	out = append(out, fit(imgLine+")", w))
	tgt := fmt.Sprintf("Target: %s (%s", d.Path, human.Bytes(d.SizeBytes))
	for _, s := range []string{strings.TrimSpace(d.Vendor + " " + d.Model), d.Serial, d.Transport} {
		if s != "" {
			tgt += ", " + s
		}
	}
	out = append(out, fit(tgt+")", w))
	o := m.options()
	prov := "Provisioning: " + string(p.Provisioning)
	for _, kv := range [][2]string{{"user-data", o.UserData.Path}, {"hostname", o.Hostname}, {"workflow", o.CijoeWorkflow}, {"config", o.CijoeConfig}} {
		if kv[1] != "" {
			prov += ", " + kv[0] + " " + kv[1]
		}
	}
	out = append(out, fit(prov, w))
	if img.SHA256 != "" {
		out = append(out, fit("Checked against sha256 "+img.SHA256, w))
	}
	for _, n := range p.Notes {
		out = append(out, wrap("Note: "+n, w)...)
	}
	if !p.OK {
		out = append(out, "")
		for _, e := range p.Errors {
			out = append(out, wrap(m.styles.err.Render("Cannot flash: ")+e, w)...)
		}
		return append(out, "", "Press esc to go back and choose again.")
	}
	out = append(out, "", m.styles.err.Render(fit(fmt.Sprintf("This will ERASE %s (%s) and everything on it.", d.Path, human.Bytes(d.SizeBytes)), w)), "")
	return append(out, fit(m.confirm.View(), w))
}

func (m Model) drawBar(frac float64, w int) string {
	frac = min(1, max(0, frac))
	if m.styles.plain || m.styles.ascii {
		n := int(frac * float64(w-2))
		return "[" + strings.Repeat("#", n) + strings.Repeat(".", w-2-n) + "]"
	}
	b := m.bar
	b.Width = w
	return b.ViewAs(frac)
}

func (m Model) flashingBody(w int) []string {
	frac := 0.0
	if m.total > 0 {
		frac = float64(m.written) / float64(m.total)
	}
	barW := max(10, min(60, w-8))
	out := []string{m.drawBar(frac, barW) + " " + pct(m.written, m.total), ""}
	line := human.Bytes(m.written) + " written (size not known before decoding)"
	if m.total > 0 {
		line = fmt.Sprintf("%s of %s", human.Bytes(m.written), human.Bytes(m.total))
	}
	if m.rate > 0 {
		line += fmt.Sprintf(" · %s/s", human.Bytes(int64(m.rate)))
		if m.total > m.written {
			eta := time.Duration(float64(m.total-m.written) / m.rate * float64(time.Second))
			line += " · ETA " + eta.Round(time.Second).String()
		}
	}
	elapsed := m.cfg.Now().Sub(m.started).Round(time.Second)
	out = append(out, fit(line, w), fit(fmt.Sprintf("Phase: %s · elapsed %s", m.phase, elapsed), w))
	for _, l := range m.output {
		out = append(out, m.styles.dim.Render(fit("| "+l, w)))
	}
	if m.askAbort {
		out = append(out, "", m.styles.err.Render(fit("Abort the flash? The disk is left partly written and will not boot. (y/N)", w)))
	} else if m.aborting {
		out = append(out, "", m.spin.View()+" aborting…")
	}
	return out
}

func (m Model) resultBody(w int) []string {
	img := m.images[m.imgCursor]
	out := []string{}
	if m.flashErr != nil {
		out = append(out, wrap(m.styles.err.Render("Flash failed: ")+describeErr(m.flashErr), w)...)
		out = append(out, "", fit(m.flashOpts.Target+" may be partly written: flash it again before booting it.", w))
		if m.cfg.LogPath != "" {
			out = append(out, fit("Details in "+m.cfg.LogPath, w))
		}
	} else if r := m.result; r != nil {
		secs := max(r.Elapsed, 0.001)
		out = append(out, m.styles.ok.Render(fit(fmt.Sprintf("Flashed %s onto %s in %s (%s/s)", img.Name, r.Target, seconds(secs), human.Bytes(int64(float64(r.TotalBytes)/secs))), w)))
		out = append(out, fit(fmt.Sprintf("%s on disk: %s written, %s zeroed", human.Bytes(r.TotalBytes), human.Bytes(r.BytesWritten), human.Bytes(r.BytesZeroed)), w))
		if r.SHA256 != "" {
			out = append(out, fit("sha256 "+r.SHA256, w))
		}
		if r.Verified {
			out = append(out, "Verified: the disk reads back as written.")
		}
		if r.Provision != nil {
			pr := fmt.Sprintf("Provisioned with %s", r.Provisioning)
			if r.Provision.LogPath != "" {
				pr += "; log " + r.Provision.LogPath
			}
			out = append(out, fit(pr, w))
		}
		for _, n := range r.Notes {
			out = append(out, wrap("Note: "+n, w)...)
		}
		if !m.cfg.MAC.IsZero() && m.cfg.Done != nil {
			switch {
			case m.reporting:
				out = append(out, m.spin.View()+" reporting done to the server…")
			case m.reportOK:
				out = append(out, m.styles.ok.Render(fit("Reported done to the server ("+m.cfg.MAC.String()+")", w)))
			case m.reportErr != nil:
				out = append(out, wrap(m.styles.err.Render("Could not report done: ")+m.reportErr.Error(), w)...)
			}
		}
	}
	if m.askReboot {
		out = append(out, "", m.styles.err.Render("Reboot now? (y/N)"))
	}
	if m.rebootErr != nil {
		out = append(out, "", fit("Reboot failed: "+m.rebootErr.Error(), w))
	}
	return out
}

// seconds formats a duration in seconds with sensible precision.
func seconds(s float64) string {
	switch {
	case s < 10:
		return fmt.Sprintf("%.2f s", s)
	case s < 600:
		return fmt.Sprintf("%.1f s", s)
	}
	return time.Duration(s * float64(time.Second)).Round(time.Second).String()
}

// wrap breaks s into lines of at most w cells at spaces.
func wrap(s string, w int) []string {
	var out []string
	for _, para := range strings.Split(s, "\n") {
		line := ""
		for _, word := range strings.Fields(para) {
			switch {
			case line == "":
				line = word
			case lipgloss.Width(line)+1+lipgloss.Width(word) <= w:
				line += " " + word
			default:
				out = append(out, line)
				line = word
			}
		}
		out = append(out, fit(line, w))
	}
	return out
}
