// A small SVG line-chart writer for `seqlab report`: linear, log10 and log2 axes with "nice" ticks
// (1-2-5 steps, Heckbert's "Nice numbers for graph labels", Graphics Gems 1990), polylines (solid or
// dashed), markers (circles optionally sized per point), free text labels, a legend right of the plot, a title and foot notes. The output
// is a standalone SVG 1.1 document; every piece of user text is XML-escaped.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace seqlab::app::svg {

enum class Scale { linear, log10, log2 };
enum class Marker { none, circle, cross };

struct Axis {
  std::string label;
  Scale scale = Scale::linear;
  double min = 0, max = 0;  // used when fixed; otherwise from the data (padded to ticks)
  bool fixed = false;
  double ticks_max = 1e300;  // no tick above this (room for markers above the data, e.g. "not run")
};

/// One line of the chart: one <polyline> (when it has two or more drawable points), plus markers.
struct Series {
  std::string label;         // the legend text (and the polyline's data-label attribute)
  std::vector<double> x, y;  // points; non-finite ones (and <= 0 on a log axis) are left out
  std::string color = "#000000";
  bool dashed = false;
  bool line = true;  // false: markers only
  Marker marker = Marker::none;
  std::vector<double> marker_r;  // circles: a radius in pixels per point, drawn translucent; empty: 3 each
  double width = 1.8;
  bool in_legend = true;
};

/// Text at a data point (x, y), drawn in `color`, just right of the point (left of it when `left`).
struct Label {
  double x = 0, y = 0;
  std::string text;
  std::string color = "#333333";
  bool left = false;
  double offset = 7;  // pixels between the point and the text
};

/// A vertical dashed line at x (e.g. where a forecast starts).
struct VLine {
  double x = 0;
  std::string color = "#888888";
};

struct LineChart {
  std::string title, subtitle;
  Axis x, y;
  std::vector<Series> series;
  std::vector<Label> labels;
  std::vector<VLine> vlines;
  std::vector<std::string> notes;  // lines of small text under the plot
  int width = 820, height = 500;   // the plot area grows the image by the legend and the notes
};

/// The chart as a standalone SVG document; throws seqlab::Error when no series has a drawable point.
std::string render(const LineChart& chart);

/// `s` with &, <, >, " and ' as entities and control characters (not allowed in XML 1.0) dropped.
std::string escape_xml(std::string_view s);

/// Tick positions covering [lo, hi] on a linear axis in 1-2-5 steps, about `target` of them; the
/// first is <= lo and the last >= hi.
std::vector<double> linear_ticks(double lo, double hi, int target = 6);
/// Tick positions on a log axis covering [lo, hi] (lo > 0): powers of the base, with 2 and 5 times
/// the powers of ten added when a log10 axis spans three decades or less.
std::vector<double> log_ticks(double lo, double hi, Scale scale);
/// The text of a tick value: no trailing zeros, just enough decimals for `step` (linear axes).
std::string tick_text(double v, double step);

/// Ten distinct colours (Tableau 10), cycled by index.
const std::string& palette(size_t i);

}  // namespace seqlab::app::svg
