package main

import (
	"fmt"
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// series is one backend's bars, one value per group; NaN or ≤ 0 on a log
// chart leaves the slot empty.
type series struct {
	Name   string
	Values []float64
}

// logTicks labels a log10-transformed axis whose zero is 10^base.
type logTicks struct{ base float64 }

// Ticks implements plot.Ticker: a labelled tick at each power of ten.
func (t logTicks) Ticks(min, max float64) []plot.Tick {
	var ticks []plot.Tick
	for k := math.Floor(min); k <= math.Ceil(max); k++ {
		ticks = append(ticks, plot.Tick{Value: k, Label: siLabel(math.Pow(10, k+t.base))})
		for m := 2.0; m < 10 && k+math.Log10(m) <= max; m++ {
			ticks = append(ticks, plot.Tick{Value: k + math.Log10(m)})
		}
	}
	return ticks
}

// linTicks is gonum's default ticker with labels in siLabel's style
// (250k, not 250000.00).
type linTicks struct{}

// Ticks implements plot.Ticker.
func (linTicks) Ticks(min, max float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(min, max)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = siLabel(ticks[i].Value)
		}
	}
	return ticks
}

// siLabel writes 1, 10, 100, 1k, 10k, 1M ... (and 0.1, 0.01 below 1).
func siLabel(v float64) string {
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%gG", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%gM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%gk", v/1e3)
	default:
		return fmt.Sprintf("%g", v)
	}
}

// spansDecades reports whether the positive values span at least n decades
// (the brief: log scale where ranges span 4 orders of magnitude).
func spansDecades(ss []series, n float64) bool {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range ss {
		for _, v := range s.Values {
			if v > 0 && !math.IsNaN(v) {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	return hi > 0 && !math.IsInf(lo, 1) && math.Log10(hi/lo) >= n
}

// barChart writes a grouped bar chart (groups on X, one bar per series in
// each group) to path; the format follows the extension (.svg here).
func barChart(path, title, ylabel string, groups []string, ss []series, logScale bool) error {
	if len(groups) == 0 || len(ss) == 0 {
		return fmt.Errorf("chart %s: no data", path)
	}
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = ylabel
	p.NominalX(groups...)
	p.Legend.Top = true
	p.Legend.Left = true
	p.Y.Min = 0

	base := 0.0
	p.Y.Tick.Marker = linTicks{}
	if logScale {
		lo := math.Inf(1)
		for _, s := range ss {
			for _, v := range s.Values {
				if v > 0 {
					lo = math.Min(lo, v)
				}
			}
		}
		if math.IsInf(lo, 1) {
			return fmt.Errorf("chart %s: no positive values for a log scale", path)
		}
		// The axis starts a decade below the smallest bar when that bar
		// would otherwise be a sliver (10.5 on an axis from 10).
		base = math.Floor(math.Log10(lo))
		if math.Log10(lo)-base < 0.5 {
			base--
		}
		p.Y.Tick.Marker = logTicks{base: base}
		p.Y.Label.Text = ylabel + " (log scale)"
	}

	p.Add(plotter.NewGrid()) // first, so the bars are drawn over it
	w := vg.Points(math.Max(4, math.Min(18, 360/float64(len(groups)*len(ss)))))
	for i, s := range ss {
		vals := make(plotter.Values, len(groups))
		for g := range groups {
			v := math.NaN()
			if g < len(s.Values) {
				v = s.Values[g]
			}
			switch {
			case math.IsNaN(v) || (logScale && v <= 0):
				vals[g] = 0
			case logScale:
				vals[g] = math.Log10(v) - base
			default:
				vals[g] = v
			}
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return fmt.Errorf("chart %s: %w", path, err)
		}
		bars.LineStyle.Width = vg.Length(0)
		bars.Color = plotutil.Color(i)
		if i == 0 {
			bars.Color = color.Gray{Y: 110}
		}
		bars.Offset = vg.Length(float64(i)-float64(len(ss)-1)/2) * w
		p.Add(bars)
		if len(ss) > 1 {
			p.Legend.Add(s.Name, bars)
		}
		if len(ss) == 1 {
			// One series: print each value over its bar (a 0 has no bar on
			// a log scale, and the reader should still see it).
			xys := make(plotter.XYs, len(groups))
			labels := make([]string, len(groups))
			for g := range groups {
				xys[g] = plotter.XY{X: float64(g), Y: vals[g]}
				if g < len(s.Values) && !math.IsNaN(s.Values[g]) {
					labels[g] = fmtVal(s.Values[g])
				}
			}
			lb, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: labels})
			if err != nil {
				return fmt.Errorf("chart %s: %w", path, err)
			}
			for i := range lb.TextStyle {
				lb.TextStyle[i].XAlign = -0.5
				lb.TextStyle[i].YAlign = 0.2
			}
			p.Add(lb)
		}
	}
	// Headroom above the tallest bar for the legend.
	if logScale {
		p.Y.Max += 1.5
	} else {
		p.Y.Max *= 1.35
	}
	return p.Save(vg.Length(max(6, 1.2*float64(len(groups))+3))*vg.Inch, 4.5*vg.Inch, path)
}
