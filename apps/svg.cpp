// The SVG line-chart writer: data -> pixel maps per axis (log axes map log(v)), a clipped plot area,
// grid and tick labels, polylines with markers, a legend to the right and notes underneath.
// Coordinates are written with two decimals; nothing non-finite ever reaches the file.
#include "apps/svg.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <limits>

#include "core/error.h"

namespace seqlab::app::svg {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Pixel geometry around the plot area.
constexpr int kLeft = 78, kRight = 20, kTop = 58, kBottom = 56, kNoteLine = 16;

std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", v);
  std::string s = b;
  if (s == "-0.00") s = "0.00";
  return s;
}

bool drawable(double v, Scale s) { return std::isfinite(v) && (s == Scale::linear || v > 0); }

double to_axis(double v, Scale s) {
  switch (s) {
    case Scale::log10:
      return std::log10(v);
    case Scale::log2:
      return std::log2(v);
    default:
      return v;
  }
}

// One axis mapped onto pixels [p0, p1] (p1 < p0 for y, which grows downwards).
struct Mapped {
  Scale scale = Scale::linear;
  double lo = 0, hi = 1;  // the range, in axis units (log of the value on log axes)
  double p0 = 0, p1 = 1;
  std::vector<double> ticks;  // values
  double step = 1;            // linear tick step (for the tick text)
  double px(double v) const { return p0 + (to_axis(v, scale) - lo) / (hi - lo) * (p1 - p0); }
};

// `pad`: widen an automatic linear range by 3% each side first, so no point sits on the frame.
Mapped map_axis(const Axis& a, double dmin, double dmax, double p0, double p1, bool pad) {
  Mapped m;
  m.scale = a.scale;
  m.p0 = p0, m.p1 = p1;
  if (a.fixed) {
    SEQLAB_CHECK(a.max > a.min && (a.scale == Scale::linear || a.min > 0), "svg: axis '", a.label,
                 "': a fixed range needs min < max (and min > 0 on a log axis), got [", a.min, ", ", a.max, "]");
    dmin = a.min, dmax = a.max;
  }
  if (a.scale == Scale::linear) {
    if (dmax - dmin <= std::abs(dmax) * 1e-12) {  // one value: a range around it
      double pad = dmin == 0 ? 1 : std::abs(dmin) * 0.1;
      dmin -= pad, dmax += pad;
    } else if (!a.fixed && pad) {
      double pad = 0.03 * (dmax - dmin);
      dmin -= pad, dmax += pad;
    }
    std::vector<double> t = linear_ticks(dmin, dmax);
    m.step = t.size() > 1 ? t[1] - t[0] : 1;
    if (a.fixed) {
      m.lo = dmin, m.hi = dmax;
      for (double v : t)
        if (v >= dmin - 1e-9 * m.step && v <= dmax + 1e-9 * m.step) m.ticks.push_back(v);
    } else {
      m.lo = t.front(), m.hi = t.back();
      m.ticks = t;
    }
    return m;
  }
  double l = to_axis(dmin, a.scale), h = to_axis(dmax, a.scale);
  if (!a.fixed) {
    double span = std::max(h - l, a.scale == Scale::log2 ? 1.0 : 0.3);
    double mid = (l + h) / 2;
    l = std::min(l, mid - span / 2) - 0.04 * span;
    h = std::max(h, mid + span / 2) + 0.04 * span;
  }
  m.lo = l, m.hi = h;
  const double base = a.scale == Scale::log2 ? 2.0 : 10.0;
  for (double v : log_ticks(std::pow(base, l), std::pow(base, h), a.scale)) {
    double t = to_axis(v, a.scale);
    if (t >= l - 1e-9 && t <= h + 1e-9) m.ticks.push_back(v);
  }
  return m;
}

std::string log_tick_text(double v, Scale s) {
  if (s == Scale::log2) {
    long e = std::lround(std::log2(v));
    return str("2<tspan dy=\"-5\" font-size=\"9\">", e, "</tspan>");
  }
  if (v >= 1e-3 && v < 1e5) return tick_text(v, v);
  char b[32];
  std::snprintf(b, sizeof b, "%.0e", v);
  return b;
}

std::string stroke_attrs(const std::string& color, double width, bool dashed) {
  return str("stroke=\"", escape_xml(color), "\" stroke-width=\"", num(width), "\"",
             dashed ? " stroke-dasharray=\"6 4\"" : "");
}

// r > 0: a sized circle, translucent so that overlapping ones stay visible; otherwise radius 3.
std::string marker_svg(Marker m, double x, double y, const std::string& color, double r = 0) {
  switch (m) {
    case Marker::circle:
      return str("<circle cx=\"", num(x), "\" cy=\"", num(y), "\" r=\"", r > 0 ? num(r) : "3", "\" fill=\"",
                 escape_xml(color), r > 0 ? "\" fill-opacity=\"0.6" : "", "\"/>\n");
    case Marker::cross:
      return str("<path class=\"cross\" d=\"M", num(x - 4), " ", num(y - 4), " L", num(x + 4), " ", num(y + 4), " M",
                 num(x - 4), " ", num(y + 4), " L", num(x + 4), " ", num(y - 4), "\" ", stroke_attrs(color, 2, false),
                 "/>\n");
    default:
      return "";
  }
}

// The data range {xmin, xmax, ymin, ymax} over every drawable point (vertical lines count on x).
std::array<double, 4> data_range(const LineChart& c) {
  double xmin = kInf, xmax = -kInf, ymin = kInf, ymax = -kInf;
  size_t points = 0;
  for (const auto& s : c.series) {
    SEQLAB_CHECK(s.x.size() == s.y.size(), "svg: series '", s.label, "' has ", s.x.size(), " x and ", s.y.size(),
                 " y values");
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!drawable(s.x[i], c.x.scale) || !drawable(s.y[i], c.y.scale)) continue;
      xmin = std::min(xmin, s.x[i]), xmax = std::max(xmax, s.x[i]);
      ymin = std::min(ymin, s.y[i]), ymax = std::max(ymax, s.y[i]);
      ++points;
    }
  }
  SEQLAB_CHECK(points > 0, "svg: chart '", c.title, "': no finite point to draw");
  for (const auto& v : c.vlines)
    if (drawable(v.x, c.x.scale)) xmin = std::min(xmin, v.x), xmax = std::max(xmax, v.x);
  return {xmin, xmax, ymin, ymax};
}

// Notes wrap at spaces to the picture's width W (about 6.3 px per character at 11 px).
std::vector<std::string> wrap_notes(const std::vector<std::string>& notes, int W) {
  std::vector<std::string> lines;
  const size_t max_chars = static_cast<size_t>(std::max(40, (W - kLeft - 10) * 10 / 63));
  for (const auto& n : notes) {
    std::string line;
    size_t i = 0;
    while (i < n.size()) {
      size_t j = n.find(' ', i);
      if (j == std::string::npos) j = n.size();
      std::string word = n.substr(i, j - i);
      if (!line.empty() && line.size() + 1 + word.size() > max_chars) lines.push_back(line), line.clear();
      line += (line.empty() ? "" : " ") + word;
      i = j + 1;
    }
    lines.push_back(line);
  }
  return lines;
}

// Where everything goes: the picture's size (W, H), the plot area (left pl, top pt, width pw,
// height ph) and both axes mapped onto it. The legend widens the picture, the notes lengthen it.
struct Frame {
  int W = 0, H = 0;
  double pl = 0, pt = 0, pw = 0, ph = 0;
  Mapped mx, my;
  bool legend = false;             // some series is in the legend
  std::vector<std::string> notes;  // wrapped to the picture's width
};

Frame layout(const LineChart& c) {
  const auto [xmin, xmax, ymin, ymax] = data_range(c);
  Frame f;
  size_t legend_chars = 0;
  for (const auto& s : c.series)
    if (s.in_legend) f.legend = true, legend_chars = std::max(legend_chars, s.label.size());
  const int legend_w = f.legend ? 56 + 7 * static_cast<int>(std::min<size_t>(legend_chars, 40)) : 0;
  f.W = c.width + legend_w;
  f.notes = wrap_notes(c.notes, f.W);
  f.H = c.height + kNoteLine * static_cast<int>(f.notes.size()) + (f.notes.empty() ? 0 : 6);
  f.pl = kLeft, f.pt = kTop, f.pw = c.width - kLeft - kRight, f.ph = c.height - kTop - kBottom;
  SEQLAB_CHECK(f.pw > 50 && f.ph > 50, "svg: chart '", c.title, "': ", c.width, "x", c.height,
               " leaves no room to plot");
  f.mx = map_axis(c.x, xmin, xmax, f.pl, f.pl + f.pw, false);
  f.my = map_axis(c.y, ymin, ymax, f.pt + f.ph, f.pt, true);
  std::erase_if(f.mx.ticks, [&](double v) { return v > c.x.ticks_max; });
  std::erase_if(f.my.ticks, [&](double v) { return v > c.y.ticks_max; });
  return f;
}

// The document's head: the <svg> element, the plot area's clip path, a white page, title and subtitle.
std::string head_svg(const LineChart& c, const Frame& f) {
  const double pl = f.pl, pt = f.pt, pw = f.pw, ph = f.ph;
  std::string o = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  o += str("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"", f.W, "\" height=\"", f.H, "\" viewBox=\"0 0 ", f.W,
           " ", f.H, "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">\n");
  o += str("<title>", escape_xml(c.title), "</title>\n");
  o += str("<defs><clipPath id=\"plot-area\"><rect x=\"", num(pl), "\" y=\"", num(pt), "\" width=\"", num(pw),
           "\" height=\"", num(ph), "\"/></clipPath></defs>\n");
  o += str("<rect x=\"0\" y=\"0\" width=\"", f.W, "\" height=\"", f.H, "\" fill=\"#ffffff\"/>\n");
  o += str("<text x=\"", num(pl), "\" y=\"22\" font-size=\"15\" font-weight=\"bold\">", escape_xml(c.title),
           "</text>\n");
  if (!c.subtitle.empty())
    o += str("<text x=\"", num(pl), "\" y=\"40\" font-size=\"11\" fill=\"#555555\">", escape_xml(c.subtitle),
             "</text>\n");
  return o;
}

// Grid lines and tick labels, the frame of the plot area and the axis labels.
std::string axes_svg(const LineChart& c, const Frame& f) {
  const double pl = f.pl, pt = f.pt, pw = f.pw, ph = f.ph;
  const Mapped &mx = f.mx, &my = f.my;
  std::string o = "<g class=\"grid\" stroke=\"#e6e6e6\" stroke-width=\"1\">\n";
  for (double v : mx.ticks)
    o += str("<line x1=\"", num(mx.px(v)), "\" y1=\"", num(pt), "\" x2=\"", num(mx.px(v)), "\" y2=\"", num(pt + ph),
             "\"/>\n");
  for (double v : my.ticks)
    o += str("<line x1=\"", num(pl), "\" y1=\"", num(my.px(v)), "\" x2=\"", num(pl + pw), "\" y2=\"", num(my.px(v)),
             "\"/>\n");
  o += "</g>\n";
  o += "<g class=\"ticks\" font-size=\"11\" fill=\"#333333\">\n";
  for (double v : mx.ticks) {
    std::string t = c.x.scale == Scale::linear ? escape_xml(tick_text(v, mx.step)) : log_tick_text(v, c.x.scale);
    o += str("<text x=\"", num(mx.px(v)), "\" y=\"", num(pt + ph + 17), "\" text-anchor=\"middle\">", t, "</text>\n");
  }
  for (double v : my.ticks) {
    std::string t = c.y.scale == Scale::linear ? escape_xml(tick_text(v, my.step)) : log_tick_text(v, c.y.scale);
    o += str("<text x=\"", num(pl - 6), "\" y=\"", num(my.px(v) + 4), "\" text-anchor=\"end\">", t, "</text>\n");
  }
  o += "</g>\n";
  o += str("<rect x=\"", num(pl), "\" y=\"", num(pt), "\" width=\"", num(pw), "\" height=\"", num(ph),
           "\" fill=\"none\" stroke=\"#333333\" stroke-width=\"1\"/>\n");
  o += str("<text x=\"", num(pl + pw / 2), "\" y=\"", num(pt + ph + 40), "\" text-anchor=\"middle\">",
           escape_xml(c.x.label), "</text>\n");
  o += str("<text transform=\"translate(18 ", num(pt + ph / 2), ") rotate(-90)\" text-anchor=\"middle\">",
           escape_xml(c.y.label), "</text>\n");
  return o;
}

// The vertical lines and the series (polylines and markers), clipped to the plot area, then the
// free text labels (unclipped).
std::string data_svg(const LineChart& c, const Frame& f) {
  const Mapped &mx = f.mx, &my = f.my;
  std::string o = "<g clip-path=\"url(#plot-area)\">\n";
  for (const auto& v : c.vlines)
    if (drawable(v.x, c.x.scale))
      o += str("<line x1=\"", num(mx.px(v.x)), "\" y1=\"", num(f.pt), "\" x2=\"", num(mx.px(v.x)), "\" y2=\"",
               num(f.pt + f.ph), "\" stroke=\"", escape_xml(v.color),
               "\" stroke-width=\"1\" stroke-dasharray=\"3 3\"/>\n");
  for (const auto& s : c.series) {
    std::vector<std::pair<double, double>> p;
    std::vector<double> r;  // the drawn points' marker radii (0: the default)
    for (size_t i = 0; i < s.x.size(); ++i)
      if (drawable(s.x[i], c.x.scale) && drawable(s.y[i], c.y.scale)) {
        p.emplace_back(mx.px(s.x[i]), my.px(s.y[i]));
        r.push_back(i < s.marker_r.size() ? s.marker_r[i] : 0);
      }
    if (s.line && p.size() >= 2) {
      std::string pts;
      for (const auto& [x, y] : p) pts += str(pts.empty() ? "" : " ", num(x), ",", num(y));
      o += str("<polyline data-label=\"", escape_xml(s.label), "\" points=\"", pts, "\" fill=\"none\" ",
               stroke_attrs(s.color, s.width, s.dashed), " stroke-linejoin=\"round\"/>\n");
    }
    for (size_t i = 0; i < p.size(); ++i) o += marker_svg(s.marker, p[i].first, p[i].second, s.color, r[i]);
  }
  o += "</g>\n";
  for (const auto& l : c.labels)
    if (drawable(l.x, c.x.scale) && drawable(l.y, c.y.scale))
      o += str("<text x=\"", num(mx.px(l.x) + (l.left ? -l.offset : l.offset)), "\" y=\"", num(my.px(l.y) + 4),
               "\" font-size=\"10\"", l.left ? " text-anchor=\"end\"" : "", " fill=\"", escape_xml(l.color), "\">",
               escape_xml(l.text), "</text>\n");
  return o;
}

// The legend, right of the plot: a line sample and marker per series, then its label.
std::string legend_svg(const LineChart& c, const Frame& f) {
  if (!f.legend) return "";
  std::string o = "<g class=\"legend\">\n";
  double lx = f.pl + f.pw + 14, ly = f.pt + 8;
  for (const auto& s : c.series) {
    if (!s.in_legend) continue;
    if (s.line)
      o += str("<line x1=\"", num(lx), "\" y1=\"", num(ly), "\" x2=\"", num(lx + 26), "\" y2=\"", num(ly), "\" ",
               stroke_attrs(s.color, s.width, s.dashed), "/>\n");
    o += marker_svg(s.marker, lx + 13, ly, s.color);
    o += str("<text x=\"", num(lx + 32), "\" y=\"", num(ly + 4), "\">", escape_xml(s.label), "</text>\n");
    ly += 20;
  }
  o += "</g>\n";
  return o;
}

}  // namespace

std::string escape_xml(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    if (ch == '&') out += "&amp;";
    else if (ch == '<') out += "&lt;";
    else if (ch == '>') out += "&gt;";
    else if (ch == '"') out += "&quot;";
    else if (ch == '\'') out += "&apos;";
    else if (static_cast<unsigned char>(ch) >= 0x20 || ch == '\t') out += ch;  // other controls: not allowed in XML 1.0
  }
  return out;
}

std::vector<double> linear_ticks(double lo, double hi, int target) {
  SEQLAB_CHECK(std::isfinite(lo) && std::isfinite(hi) && hi > lo, "svg: ticks need a finite range lo < hi, got [", lo,
               ", ", hi, "]");
  double raw = (hi - lo) / std::max(1, target - 1);
  double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double f = raw / mag;
  double step = (f < 1.5 ? 1.0 : f < 3.0 ? 2.0 : f < 7.0 ? 5.0 : 10.0) * mag;  // the nearest nice step
  double first = std::floor(lo / step + 1e-9) * step, last = std::ceil(hi / step - 1e-9) * step;
  std::vector<double> t;
  for (long i = 0; first + static_cast<double>(i) * step <= last + step * 1e-6; ++i) {
    double v = first + static_cast<double>(i) * step;
    t.push_back(std::abs(v) < step * 1e-9 ? 0.0 : v);
  }
  return t;
}

std::vector<double> log_ticks(double lo, double hi, Scale scale) {
  SEQLAB_CHECK(lo > 0 && hi >= lo && std::isfinite(hi), "svg: log ticks need 0 < lo <= hi, got [", lo, ", ", hi, "]");
  std::vector<double> t;
  if (scale == Scale::log2) {
    long e0 = std::lround(std::floor(std::log2(lo))), e1 = std::lround(std::ceil(std::log2(hi)));
    long every = std::max(1L, (e1 - e0 + 11) / 12);  // at most about a dozen labels
    for (long e = e0; e <= e1; ++e)
      if (e % every == 0) t.push_back(std::ldexp(1.0, static_cast<int>(e)));
    return t;
  }
  long e0 = std::lround(std::floor(std::log10(lo))), e1 = std::lround(std::ceil(std::log10(hi)));
  const bool fine = e1 - e0 <= 3;
  for (long e = e0; e <= e1; ++e) {
    double p = std::pow(10.0, static_cast<double>(e));
    t.push_back(p);
    if (fine && e < e1) t.insert(t.end(), {2 * p, 5 * p});
  }
  return t;
}

std::string tick_text(double v, double step) {
  if (std::abs(v) >= 1e6 || (v != 0 && std::abs(v) < 1e-4)) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", v);
    return b;
  }
  int decimals = std::clamp(static_cast<int>(std::ceil(-std::log10(std::abs(step)) - 1e-9)), 0, 8);
  char b[48];
  std::snprintf(b, sizeof b, "%.*f", decimals, v);
  std::string s = b;
  if (s.find('.') != std::string::npos) {
    while (s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
  }
  if (s == "-0") s = "0";
  return s;
}

const std::string& palette(size_t i) {
  static const std::array<std::string, 10> colors = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                                     "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  return colors[i % colors.size()];
}

std::string render(const LineChart& c) {
  const Frame f = layout(c);
  std::string o = head_svg(c, f);
  o += axes_svg(c, f);
  o += data_svg(c, f);
  o += legend_svg(c, f);
  for (size_t i = 0; i < f.notes.size(); ++i)
    o += str("<text x=\"", num(f.pl), "\" y=\"", num(c.height + kNoteLine * static_cast<double>(i) + 2),
             "\" font-size=\"11\" fill=\"#555555\">", escape_xml(f.notes[i]), "</text>\n");
  o += "</svg>\n";
  return o;
}

}  // namespace seqlab::app::svg
