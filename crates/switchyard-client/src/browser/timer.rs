//! JavaScript timers owned from Rust: cleared when cancelled or dropped.

use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(callback: &JsValue, ms: f64) -> JsValue;
    #[wasm_bindgen(js_name = setInterval)]
    fn set_interval(callback: &JsValue, ms: f64) -> JsValue;
    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(id: &JsValue);
    #[wasm_bindgen(js_name = clearInterval)]
    fn clear_interval(id: &JsValue);
}

/// A pending `setTimeout` or running `setInterval`. Its callback must not drop it: a
/// callback that ends its own timer hands it to the owner's retired list instead.
pub struct Timer {
    id: JsValue,
    repeats: bool,
    _callback: Closure<dyn FnMut()>,
}

impl Timer {
    /// Calls `callback` once after `ms` milliseconds.
    pub fn once(ms: f64, callback: impl FnOnce() + 'static) -> Self {
        let mut callback = Some(callback);
        let callback = Closure::<dyn FnMut()>::new(move || {
            if let Some(callback) = callback.take() {
                callback();
            }
        });
        Self { id: set_timeout(callback.as_ref(), ms), repeats: false, _callback: callback }
    }

    /// Calls `callback` every `ms` milliseconds.
    pub fn every(ms: f64, callback: impl FnMut() + 'static) -> Self {
        let callback = Closure::<dyn FnMut()>::new(callback);
        Self { id: set_interval(callback.as_ref(), ms), repeats: true, _callback: callback }
    }

    /// Clears the timer: its callback is not called again.
    pub fn cancel(&self) {
        if self.repeats {
            clear_interval(&self.id);
        } else {
            clear_timeout(&self.id);
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.cancel();
    }
}
