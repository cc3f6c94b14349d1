//! `pse-flash-v1`: general and red flash detection per WCAG 2.3.1 / ITU-R BT.1702, computed
//! as the open-source EA IRIS tool does, on frames scaled to about 160 px wide.
//!
//! Per frame: linearised sRGB, relative luminance `L = 0.2126R + 0.7152G + 0.0722B`, and the
//! red value `(R − G − B) × 320` for saturated red pixels (`R / (R + G + B) ≥ 0.8`). A
//! frame-to-frame change counts only when at least 25 % of the pixels changed; it is then the
//! difference of the frame means. Changes accumulate while their sign holds; a transition is
//! counted when the sum reaches 0.1 (luminance, darker state below 0.8) or 20 (red), and the
//! next one must go the other way. More than 6 transitions (3 flashes) in any 1 s window of
//! presentation time flags the video.

use serde::{Deserialize, Serialize};

pub const ALGORITHM: &str = "pse-flash-v1";
const LUMINANCE_STEP: f64 = 0.1;
const DARKER_BELOW: f64 = 0.8;
const RED_STEP: f64 = 20.0;
const MIN_CHANGED_AREA: f64 = 0.25;
const WINDOW_MS: u64 = 1000;
/// More than this many transitions in one second fails (more than 3 flashes).
const MAX_TRANSITIONS: usize = 6;
/// A warning from this many transitions in one second (2 flashes).
const WARN_TRANSITIONS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Safe,
    Flagged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlashKind {
    Luminance,
    Red,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reason {
    pub kind: FlashKind,
    pub start_ms: u64,
    pub end_ms: u64,
    pub max_transitions_1s: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    pub frames: u64,
    pub analysis_width: u32,
    pub luminance_transitions: usize,
    pub red_transitions: usize,
    pub max_luminance_transitions_1s: usize,
    pub max_red_transitions_1s: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub verdict: Verdict,
    pub warnings: Vec<String>,
    pub reasons: Vec<Reason>,
    pub metrics: Metrics,
    pub algorithm: String,
}

/// Per-frame values the analysis keeps of the previous frame.
struct FrameValues {
    luminance: Vec<f32>,
    red: Vec<f32>,
    mean_luminance: f64,
    mean_red: f64,
}

/// Counts transitions of one kind.
#[derive(Default)]
struct Transitions {
    accumulated: f64,
    /// Direction of the last counted transition (+1 or −1), 0 before the first.
    last: i8,
    at_ms: Vec<u64>,
}

impl Transitions {
    fn feed(&mut self, delta: f64, step: f64, at_ms: u64) {
        if delta == 0.0 {
            return;
        }
        let sign: i8 = if delta > 0.0 { 1 } else { -1 };
        // A change against the running sum starts a new run in its own direction.
        if self.accumulated != 0.0 && (self.accumulated > 0.0) != (delta > 0.0) {
            self.accumulated = 0.0;
        }
        // The next transition must reverse the last one.
        if sign == self.last {
            return;
        }
        self.accumulated += delta;
        if self.accumulated.abs() >= step {
            self.at_ms.push(at_ms);
            self.last = sign;
            self.accumulated = 0.0;
        }
    }
}

pub struct Analyzer {
    linear: [f32; 256],
    previous: Option<FrameValues>,
    luminance: Transitions,
    red: Transitions,
    frames: u64,
    width: u32,
    strict: bool,
}

impl Analyzer {
    pub fn new(strict: bool) -> Analyzer {
        let mut linear = [0f32; 256];
        for (value, slot) in linear.iter_mut().enumerate() {
            let c = value as f64 / 255.0;
            *slot = if c <= 0.04045 { c / 12.92 } else { ((c + 0.055) / 1.055).powf(2.4) } as f32;
        }
        Analyzer {
            linear,
            previous: None,
            luminance: Transitions::default(),
            red: Transitions::default(),
            frames: 0,
            width: 0,
            strict,
        }
    }

    /// Feeds one packed RGB frame (`stride` bytes per row) shown at `at_ms`.
    pub fn frame(&mut self, rgb: &[u8], width: u32, height: u32, stride: usize, at_ms: u64) {
        let pixels = (width * height) as usize;
        if pixels == 0 {
            return;
        }
        let mut luminance = Vec::with_capacity(pixels);
        let mut red = Vec::with_capacity(pixels);
        let (mut sum_l, mut sum_r) = (0f64, 0f64);
        for row in 0..height as usize {
            let Some(line) = rgb.get(row * stride..row * stride + width as usize * 3) else { break };
            for px in line.chunks_exact(3) {
                let (r, g, b) = (self.linear[px[0] as usize], self.linear[px[1] as usize], self.linear[px[2] as usize]);
                let l = 0.2126 * r + 0.7152 * g + 0.0722 * b;
                let sum = r + g + b;
                let red_value = if sum > 0.0 && r / sum >= 0.8 { (r - g - b).max(0.0) * 320.0 } else { 0.0 };
                sum_l += l as f64;
                sum_r += red_value as f64;
                luminance.push(l);
                red.push(red_value);
            }
        }
        let count = luminance.len().max(1) as f64;
        let current = FrameValues { mean_luminance: sum_l / count, mean_red: sum_r / count, luminance, red };
        if let Some(previous) = &self.previous
            && previous.luminance.len() == current.luminance.len()
        {
            let n = current.luminance.len() as f64;
            let changed_l = previous
                .luminance
                .iter()
                .zip(&current.luminance)
                .filter(|(a, b)| ((**a - **b).abs() as f64) >= LUMINANCE_STEP && (a.min(**b) as f64) < DARKER_BELOW)
                .count() as f64;
            let changed_r =
                previous.red.iter().zip(&current.red).filter(|(a, b)| ((**a - **b).abs() as f64) >= RED_STEP).count()
                    as f64;
            let delta_l =
                if changed_l / n >= MIN_CHANGED_AREA { current.mean_luminance - previous.mean_luminance } else { 0.0 };
            let delta_r = if changed_r / n >= MIN_CHANGED_AREA { current.mean_red - previous.mean_red } else { 0.0 };
            self.luminance.feed(delta_l, LUMINANCE_STEP, at_ms);
            self.red.feed(delta_r, RED_STEP, at_ms);
        }
        self.previous = Some(current);
        self.frames += 1;
        self.width = width;
    }

    pub fn finish(self) -> Report {
        let mut warnings = Vec::new();
        let mut reasons = Vec::new();
        let mut flagged = false;
        let mut maxima = [0usize; 2];
        for (index, (kind, transitions)) in
            [(FlashKind::Luminance, &self.luminance), (FlashKind::Red, &self.red)].into_iter().enumerate()
        {
            let counts = window_counts(&transitions.at_ms);
            let max = counts.iter().copied().max().unwrap_or(0);
            maxima[index] = max;
            for (start, end, peak) in runs_over(&transitions.at_ms, &counts, MAX_TRANSITIONS) {
                flagged = true;
                reasons.push(Reason { kind, start_ms: start, end_ms: end, max_transitions_1s: peak });
            }
            let label = match kind {
                FlashKind::Luminance => "general",
                FlashKind::Red => "red",
            };
            if (WARN_TRANSITIONS..=MAX_TRANSITIONS).contains(&max) {
                warnings
                    .push(format!("{label} flashes: {max} transitions within one second (limit {MAX_TRANSITIONS})"));
            }
            if sustained(&transitions.at_ms) {
                warnings.push(format!("{label} flashes: 2 to 3 per second sustained over 4 of 5 seconds"));
                if self.strict {
                    flagged = true;
                    let start = transitions.at_ms.first().copied().unwrap_or(0);
                    let end = transitions.at_ms.last().copied().unwrap_or(0);
                    reasons.push(Reason { kind, start_ms: start, end_ms: end, max_transitions_1s: max });
                }
            }
        }
        Report {
            verdict: if flagged { Verdict::Flagged } else { Verdict::Safe },
            warnings,
            reasons,
            metrics: Metrics {
                frames: self.frames,
                analysis_width: self.width,
                luminance_transitions: self.luminance.at_ms.len(),
                red_transitions: self.red.at_ms.len(),
                max_luminance_transitions_1s: maxima[0],
                max_red_transitions_1s: maxima[1],
            },
            algorithm: ALGORITHM.to_owned(),
        }
    }
}

/// For each transition, how many transitions fall in the second starting at it.
fn window_counts(at_ms: &[u64]) -> Vec<usize> {
    let mut end = 0;
    at_ms
        .iter()
        .enumerate()
        .map(|(start, &t)| {
            end = end.max(start);
            while end < at_ms.len() && at_ms[end] < t + WINDOW_MS {
                end += 1;
            }
            end - start
        })
        .collect()
}

/// Time spans where one-second windows hold more than `limit` transitions.
fn runs_over(at_ms: &[u64], counts: &[usize], limit: usize) -> Vec<(u64, u64, usize)> {
    let mut runs: Vec<(u64, u64, usize)> = Vec::new();
    for (i, &count) in counts.iter().enumerate() {
        if count <= limit {
            continue;
        }
        let (start, end) = (at_ms[i], at_ms[i + count - 1]);
        match runs.last_mut() {
            Some(run) if start <= run.1 => {
                run.1 = run.1.max(end);
                run.2 = run.2.max(count);
            }
            _ => runs.push((start, end, count)),
        }
    }
    runs
}

/// 4 to 6 transitions per second in at least 4 of any 5 consecutive seconds.
fn sustained(at_ms: &[u64]) -> bool {
    let Some(&last) = at_ms.last() else { return false };
    // A clip shorter than five seconds is judged as if it were followed by calm.
    let seconds = ((last / WINDOW_MS + 1) as usize).max(5);
    let mut per_second = vec![0usize; seconds];
    for &t in at_ms {
        per_second[(t / WINDOW_MS) as usize] += 1;
    }
    per_second.windows(5).any(|w| w.iter().filter(|&&n| (WARN_TRANSITIONS..=MAX_TRANSITIONS).contains(&n)).count() >= 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `seconds` of `fps` frames, each frame's colour chosen by `paint(frame index)`.
    fn run(fps: u64, seconds: u64, paint: impl Fn(u64) -> [u8; 3]) -> Report {
        let mut analyzer = Analyzer::new(false);
        let (w, h) = (16u32, 9u32);
        for i in 0..fps * seconds {
            let colour = paint(i);
            let frame: Vec<u8> = (0..w * h).flat_map(|_| colour).collect();
            analyzer.frame(&frame, w, h, w as usize * 3, i * 1000 / fps);
        }
        analyzer.finish()
    }

    const BLACK: [u8; 3] = [0, 0, 0];
    const WHITE: [u8; 3] = [255, 255, 255];

    #[test]
    fn fast_black_white_flashes_are_flagged() {
        // 10 Hz: the colour flips every 3 frames at 60 fps.
        let report = run(60, 3, |i| if (i / 3) % 2 == 0 { BLACK } else { WHITE });
        assert_eq!(report.verdict, Verdict::Flagged);
        assert_eq!(report.reasons[0].kind, FlashKind::Luminance);
        assert!(report.metrics.max_luminance_transitions_1s >= 19, "{report:?}");
    }

    #[test]
    fn slow_flashes_are_safe_and_three_per_second_warns() {
        let one_hz = run(30, 4, |i| if (i / 15) % 2 == 0 { BLACK } else { WHITE });
        assert_eq!((one_hz.verdict, one_hz.warnings.len()), (Verdict::Safe, 0), "{one_hz:?}");
        let three_hz = run(30, 4, |i| if (i / 5) % 2 == 0 { BLACK } else { WHITE });
        assert_eq!(three_hz.verdict, Verdict::Safe, "{three_hz:?}");
        assert_eq!(three_hz.metrics.max_luminance_transitions_1s, 6);
        assert!(!three_hz.warnings.is_empty());
        let strict = {
            let mut analyzer = Analyzer::new(true);
            for i in 0..30 * 6 {
                let colour = if (i / 5) % 2 == 0 { BLACK } else { WHITE };
                let frame: Vec<u8> = (0..16 * 9).flat_map(|_| colour).collect();
                analyzer.frame(&frame, 16, 9, 48, i * 1000 / 30);
            }
            analyzer.finish()
        };
        assert_eq!(strict.verdict, Verdict::Flagged, "strict promotes sustained flashing");
    }

    #[test]
    fn red_flashes_at_equal_luminance_are_red_flags() {
        let report = run(60, 3, |i| if (i / 3) % 2 == 0 { [255, 0, 0] } else { [127, 127, 127] });
        assert_eq!(report.verdict, Verdict::Flagged, "{report:?}");
        assert!(report.reasons.iter().all(|r| r.kind == FlashKind::Red), "{report:?}");
        assert_eq!(report.metrics.luminance_transitions, 0);
    }

    #[test]
    fn low_contrast_and_small_areas_are_safe() {
        let dim = run(60, 3, |i| if (i / 3) % 2 == 0 { [100, 100, 100] } else { [120, 120, 120] });
        assert_eq!((dim.verdict, dim.metrics.luminance_transitions), (Verdict::Safe, 0));
        // A flashing box over ~6 % of the frame.
        let mut analyzer = Analyzer::new(false);
        for i in 0..180u64 {
            let on = (i / 3) % 2 == 1;
            let frame: Vec<u8> =
                (0..160 * 90).flat_map(|p| if on && p % 160 < 40 && p / 160 < 22 { WHITE } else { BLACK }).collect();
            analyzer.frame(&frame, 160, 90, 480, i * 1000 / 60);
        }
        assert_eq!(analyzer.finish().verdict, Verdict::Safe);
    }

    #[test]
    fn windows_are_half_open_seconds() {
        assert_eq!(window_counts(&[0, 500, 999, 1000, 1999]), vec![3, 3, 2, 2, 1]);
        assert_eq!(runs_over(&[0, 1, 2], &[3, 2, 1], 2), vec![(0, 2, 3)]);
        assert!(sustained(&[0, 200, 400, 600, 1000, 1200, 1400, 1600, 2000, 2200, 2400, 2600, 3000, 3200, 3400, 3600]));
        assert!(!sustained(&[0, 500]));
    }
}
