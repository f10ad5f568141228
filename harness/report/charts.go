package report

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
)

// A chart is an inline SVG's geometry, computed here and drawn by the "chart" template in
// report.html.tmpl, so the page needs no script or library to show it. Coordinates are SVG
// user units (pixels at 100% zoom).
type chart struct {
	Title, XLabel, YLabel string
	W, H                  float64
	// The plot area: Left..Right, Top..Bottom; the x axis is drawn at AxisY (below Bottom
	// when a strip of dots sits under the histogram).
	Left, Right, Top, Bottom, AxisY float64
	XTicks, YTicks                  []tick
	Bars                            []bar
	Series                          []series
	Dots                            []dot
	Rules                           []rule
}

type tick struct {
	At    float64 // x for XTicks, y for YTicks
	Label string
}

type bar struct {
	X, Y, W, H float64
	Title      string
}

type series struct {
	Name  string
	Class string // series-0 ...: colours live in the page's stylesheet
	// Points is the polyline's "x,y x,y ..." attribute.
	Points  string
	Dots    []dot
	LegendY float64
}

type dot struct {
	X, Y  float64
	Title string
}

// rule is a vertical marker line (median, p90, ...) labelled at LabelY, on its right, or
// on its left (End) when it is near the chart's right edge.
type rule struct {
	X, LabelY float64
	Label     string
	Class     string
	End       bool
}

// niceStep rounds raw up to 1, 2 or 5 times a power of ten, so axis ticks read well.
func niceStep(raw float64) float64 {
	if raw <= 0 || math.IsNaN(raw) || math.IsInf(raw, 0) {
		return 1
	}
	pow := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*pow {
			return m * pow
		}
	}
	return 10 * pow
}

// axis returns ticks from 0 to at least max, about n of them, and the axis's end.
func axis(max float64, n int) (ticks []float64, end float64) {
	step := niceStep(max / float64(n))
	end = math.Max(step, math.Ceil(max/step)*step)
	for v := 0.0; v <= end+step/2; v += step {
		ticks = append(ticks, v)
	}
	return ticks, end
}

// propagationChart is a histogram of the samples (milliseconds) with a strip of every
// sample under it, and lines at the median, p90, max and the goal.
func propagationChart(p *Propagation) chart {
	c := chart{Title: "propagation times", XLabel: "apply → proxy config (ms)", YLabel: "changes",
		W: 900, H: 270, Left: 52, Right: 880, Top: 22, Bottom: 172, AxisY: 214}
	ms := make([]float64, len(p.Samples))
	for i, v := range p.Samples {
		ms[i] = v * 1000
	}
	top := math.Max(p.Max, p.Goal) * 1000
	if top <= 0 {
		top = 1
	}
	step := niceStep(top / 24)
	bins := int(math.Ceil(top / step))
	if bins < 1 {
		bins = 1
	}
	end := float64(bins) * step
	x := func(v float64) float64 { return c.Left + (c.Right-c.Left)*v/end }
	counts := make([]int, bins)
	for _, v := range ms {
		counts[min(int(v/step), bins-1)]++
	}
	maxCount := 1
	for _, n := range counts {
		maxCount = max(maxCount, n)
	}
	// Headroom above the tallest bar keeps the marker labels readable.
	yTicks, yEnd := axis(float64(maxCount)*1.2, 4)
	y := func(v float64) float64 { return c.Bottom - (c.Bottom-c.Top)*v/yEnd }
	for _, v := range yTicks {
		if v == math.Trunc(v) { // counts are whole numbers
			c.YTicks = append(c.YTicks, tick{At: y(v), Label: fmt.Sprintf("%.0f", v)})
		}
	}
	for i, n := range counts {
		if n == 0 {
			continue
		}
		lo := float64(i) * step
		c.Bars = append(c.Bars, bar{X: x(lo) + 0.5, Y: y(float64(n)), W: math.Max(1, x(lo+step)-x(lo)-1), H: c.Bottom - y(float64(n)),
			Title: fmt.Sprintf("%d change(s) in %s–%s ms", n, trimFloat(lo), trimFloat(lo+step))})
	}
	xTicks, _ := axis(end, 8)
	for _, v := range xTicks {
		if v <= end {
			c.XTicks = append(c.XTicks, tick{At: x(v), Label: trimFloat(v)})
		}
	}
	// The strip shows each sample in the order measured; a fixed vertical spread keeps
	// equal values apart without randomness, so the same run draws the same picture.
	const stripTop, stripHeight = 182.0, 24.0
	for i, v := range ms {
		c.Dots = append(c.Dots, dot{X: x(v), Y: stripTop + math.Mod(float64(i)*7, stripHeight),
			Title: fmt.Sprintf("change %d: %.0f ms", i+1, v)})
	}
	for i, r := range []struct {
		v            float64
		label, class string
	}{
		{p.Median, "median", "rule-median"}, {p.P90, "p90", "rule-p90"}, {p.Max, "max", "rule-max"}, {p.Goal, "goal", "rule-goal"},
	} {
		rx := x(r.v * 1000)
		c.Rules = append(c.Rules, rule{X: rx, LabelY: c.Top + 10 + float64(i)*12, Class: r.class,
			Label: fmt.Sprintf("%s %.0f ms", r.label, r.v*1000), End: rx > c.Left+0.8*(c.Right-c.Left)})
	}
	return c
}

// sizePoint is one measurement of the served-config size curve: per mode (full,
// sidecar, discoverySelectors, ...) the clusters and bytes served at a namespace count.
type sizePoint struct {
	Namespaces float64
	Modes      map[string]sizeValue
}

type sizeValue struct {
	Clusters float64 `json:"clusters"`
	Bytes    float64 `json:"bytes"`
}

// parseConfigSize reads the ConfigSizeEntry points. An entry is an object with the
// namespace count ("unselectedNamespaces", or "namespaces") and one object per mode with
// "clusters" and "bytes"; other fields are ignored, and an entry without a count is
// skipped (it cannot be placed on the curve).
func parseConfigSize(entries []json.RawMessage) (points []sizePoint, modes []string) {
	seen := map[string]bool{}
	for _, e := range entries {
		var fields map[string]json.RawMessage
		if json.Unmarshal(e, &fields) != nil {
			continue
		}
		var p sizePoint
		if json.Unmarshal(fields["unselectedNamespaces"], &p.Namespaces) != nil &&
			json.Unmarshal(fields["namespaces"], &p.Namespaces) != nil {
			continue
		}
		p.Modes = map[string]sizeValue{}
		for name, raw := range fields {
			var probe map[string]json.RawMessage
			var v sizeValue
			if json.Unmarshal(raw, &probe) != nil || (probe["clusters"] == nil && probe["bytes"] == nil) || json.Unmarshal(raw, &v) != nil {
				continue
			}
			p.Modes[name] = v
			if !seen[name] {
				seen[name] = true
				modes = append(modes, name)
			}
		}
		points = append(points, p)
	}
	sort.SliceStable(points, func(i, j int) bool { return points[i].Namespaces < points[j].Namespaces })
	// "full" (no remedy) first, the remedies after it by name: the same colour per mode in
	// both charts and in every run.
	sort.Slice(modes, func(i, j int) bool {
		if (modes[i] == "full") != (modes[j] == "full") {
			return modes[i] == "full"
		}
		return modes[i] < modes[j]
	})
	return points, modes
}

// sizeChart draws one line per mode of metric (clusters or bytes) against namespaces.
// unit is what the y ticks step in (1, or 1024 for bytes, so ticks fall on whole KB).
func sizeChart(points []sizePoint, modes []string, title, yLabel string, metric func(sizeValue) float64, unit float64, format func(float64) string) chart {
	c := chart{Title: title, XLabel: "unselected namespaces", YLabel: yLabel,
		W: 540, H: 260, Left: 64, Right: 370, Top: 16, Bottom: 214, AxisY: 214}
	maxX, maxY := 1.0, 1.0
	for _, p := range points {
		maxX = math.Max(maxX, p.Namespaces)
		for _, v := range p.Modes {
			maxY = math.Max(maxY, metric(v))
		}
	}
	xTicks, xEnd := axis(maxX, 5)
	yTicks, yEnd := axis(maxY/unit, 5)
	yEnd *= unit
	x := func(v float64) float64 { return c.Left + (c.Right-c.Left)*v/xEnd }
	y := func(v float64) float64 { return c.Bottom - (c.Bottom-c.Top)*v/yEnd }
	for _, v := range xTicks {
		c.XTicks = append(c.XTicks, tick{At: x(v), Label: trimFloat(v)})
	}
	for _, v := range yTicks {
		c.YTicks = append(c.YTicks, tick{At: y(v * unit), Label: format(v * unit)})
	}
	for i, mode := range modes {
		s := series{Name: mode, Class: fmt.Sprintf("series-%d", i%6), LegendY: c.Top + 8 + float64(i)*18}
		for _, p := range points {
			v, ok := p.Modes[mode]
			if !ok {
				continue
			}
			px, py := x(p.Namespaces), y(metric(v))
			s.Points += fmt.Sprintf("%.1f,%.1f ", px, py)
			s.Dots = append(s.Dots, dot{X: px, Y: py, Title: fmt.Sprintf("%s, %s namespaces: %s %s", mode, trimFloat(p.Namespaces), format(metric(v)), yLabel)})
		}
		c.Series = append(c.Series, s)
	}
	return c
}

// trimFloat prints a tick value without a useless fraction.
func trimFloat(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%g", math.Round(v*1000)/1000)
}

// byteUnit is the unit byte ticks step in: KB, or MB once the values reach megabytes.
func byteUnit(max float64) float64 {
	switch {
	case max >= 1<<20:
		return 1 << 20
	case max >= 1<<10:
		return 1 << 10
	}
	return 1
}

// byteSize prints a byte count in B, KB or MB (powers of 1024, as tools show config sizes).
func byteSize(v float64) string {
	switch {
	case v >= 1<<20:
		return fmt.Sprintf("%s MB", trimFloat(math.Round(v/(1<<20)*10)/10))
	case v >= 1<<10:
		return fmt.Sprintf("%s KB", trimFloat(math.Round(v/(1<<10)*10)/10))
	}
	return fmt.Sprintf("%.0f B", v)
}
