//! `tripwire scorecard fit`: a behaviour scorecard built from history with the engine that
//! serves it, so the features it is trained on are the features it is scored on, bit for bit.
//!
//! The pipeline: the history is replayed through the same interceptor as `replay` (rows before
//! `--train-from` warm the state; `--label-delay` turns labels into fraud reports, so nothing
//! leaks), under the rules file with a placeholder scorecard holding the characteristics; each
//! labelled row of the training and test periods keeps the exact value of every
//! characteristic. Then per characteristic [`binning`] (monotonic, minimum share, a missing
//! bin, WOE and IV); characteristics under the IV threshold are dropped; [`logistic`]
//! regression on the WOE values; points scaled from base score, base odds and points to double
//! the odds. The fitted scorecard is compiled by the rules loader and every row is scored with
//! `engine::score_values` — the function `serve` scores with — for the [`quality`] figures.

pub mod binning;
pub mod command;
pub mod logistic;
pub mod quality;
