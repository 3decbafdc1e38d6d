package server

import (
	"encoding/xml"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/btyproject/bty/internal/fleet"
)

// chartMark is one plotted point as the SVG has it.
type chartMark struct {
	Class, Flash, Title, Shape string
	X, Y                       float64
}

// parseChart parses svg as XML (failing t when it is not) and returns
// its points and the text of its legend.
func parseChart(t *testing.T, svg string) (marks []chartMark, legend []string) {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(svg))
	var cur *chartMark
	var inTitle, inLegend bool
	depth, legendDepth := 0, 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the chart is not XML: %v\n%s", err, svg)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			depth++
			attr := map[string]string{}
			for _, a := range e.Attr {
				attr[a.Name.Local] = a.Value
			}
			switch {
			case e.Name.Local == "g" && strings.HasPrefix(attr["class"], "pt "):
				cur = &chartMark{Class: attr["class"], Flash: attr["data-flash"]}
				if _, err := fmt.Sscanf(attr["transform"], "translate(%g,%g)", &cur.X, &cur.Y); err != nil {
					t.Fatalf("point transform %q: %v", attr["transform"], err)
				}
			case e.Name.Local == "g" && attr["class"] == "legend":
				inLegend, legendDepth = true, depth
			case cur != nil && e.Name.Local == "title":
				inTitle = true
			case cur != nil:
				cur.Shape = e.Name.Local
			}
		case xml.CharData:
			if inTitle {
				cur.Title += string(e)
			} else if inLegend && strings.TrimSpace(string(e)) != "" {
				legend = append(legend, string(e))
			}
		case xml.EndElement:
			switch {
			case inTitle && e.Name.Local == "title":
				inTitle = false
			case cur != nil && e.Name.Local == "g":
				marks = append(marks, *cur)
				cur = nil
			case inLegend && depth == legendDepth:
				inLegend = false
			}
			depth--
		}
	}
	return marks, legend
}

// TestFlashChart: one marker per ended flash at its request time (x) and
// duration (y), shaped by result, with a tooltip; running flashes and
// flashes outside the window are left out; the legend counts each
// result; no flashes: an empty-state message, no SVG.
func TestFlashChart(t *testing.T) {
	to := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	from := to.Add(-28 * 24 * time.Hour)
	mac := fleet.MustParseMAC("52:54:00:c4:a2:01")
	flash := func(id int64, at time.Time, took time.Duration, r fleet.FlashResult) fleet.Flash {
		f := fleet.Flash{ID: id, MAC: mac, Image: "deb<12>.img", Result: r, Phase: fleet.PhaseFetch, RequestedAt: at}
		if r != fleet.FlashRunning {
			end := at.Add(took)
			f.EndedAt = &end
		}
		return f
	}
	fs := []fleet.Flash{
		flash(1, from, 12*time.Minute, fleet.FlashReady),                        // left edge, top of a 12-minute axis
		flash(2, from.Add(14*24*time.Hour), 6*time.Minute, fleet.FlashFailed),   // the middle, half way
		flash(3, to, 0, fleet.FlashTimeout),                                     // right edge, bottom
		flash(4, from.Add(7*24*time.Hour), 3*time.Minute, fleet.FlashCancelled), // a quarter, a quarter up
		flash(5, to.Add(-time.Hour), 0, fleet.FlashRunning),                     // not plotted
		flash(6, from.Add(-time.Hour), time.Minute, fleet.FlashReady),           // before the window
	}
	fs[0].Hostname = "web-1"
	marks, legend := parseChart(t, string(flashChart(fs, from, to)))
	left, right := float64(chartLeft), float64(chartLeft+chartPlotW)
	top, bottom := float64(chartTop), float64(chartTop+chartPlotH)
	type pos struct {
		Flash, Class, Shape string
		X, Y                float64
	}
	var got []pos
	for _, m := range marks {
		got = append(got, pos{m.Flash, m.Class, m.Shape, m.X, m.Y})
	}
	want := []pos{
		{"1", "pt pt-ready", "circle", left, top},
		{"2", "pt pt-failed", "rect", (left + right) / 2, (top + bottom) / 2},
		{"3", "pt pt-timeout", "path", right, bottom},
		{"4", "pt pt-cancelled", "path", left + (right-left)/4, bottom - (bottom-top)/4},
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b float64) bool { return a-b < 0.06 && b-a < 0.06 })); diff != "" {
		t.Errorf("points (-want +got):\n%s", diff)
	}
	if len(marks) > 0 && marks[0].Title != "2026-11-09 00:00 UTC: flash 1 of web-1 (52:54:00:c4:a2:01), deb<12>.img, ready in 12m00s" {
		t.Errorf("tooltip %q", marks[0].Title)
	}
	if diff := cmp.Diff([]string{"ready (1)", "failed (1)", "timeout (1)", "cancelled (1)"}, legend); diff != "" {
		t.Errorf("legend (-want +got):\n%s", diff)
	}
	svg := string(flashChart(fs, from, to))
	for _, s := range []string{"Duration (minutes)", "Requested (UTC)", ">Nov 9<", ">Dec 7<", "1 in progress, not shown"} {
		if !strings.Contains(svg, s) {
			t.Errorf("the chart lacks %q", s)
		}
	}

	for name, in := range map[string][]fleet.Flash{"none": nil, "only running": fs[4:5], "only older": fs[5:]} {
		out := string(flashChart(in, from, to))
		if strings.Contains(out, "<svg") || !strings.Contains(out, `id="flash-chart-empty"`) {
			t.Errorf("%s: %s, want the empty-state message", name, out)
		}
	}
}

func TestChartYMax(t *testing.T) {
	for in, want := range map[float64]float64{0: 1, 0.5: 1, 1: 1, 1.01: 2, 7: 8, 61: 80, 5000: 2880} {
		if got := chartYMax(in); got != want {
			t.Errorf("chartYMax(%v) = %v, want %v", in, got, want)
		}
	}
}
