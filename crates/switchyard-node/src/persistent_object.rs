//! A JavaScript object kept alive from Rust, released when dropped. JS-thread only:
//! the type is neither `Send` nor `Sync`.

use std::marker::PhantomData;

use napi::bindgen_prelude::{Object, ObjectRef};
use napi::{Env, Result};

pub struct PersistentObject {
    env: napi::sys::napi_env,
    reference: Option<ObjectRef<false>>,
    /// Keeps the type on the thread that made it.
    _js_thread: PhantomData<*const ()>,
}

impl PersistentObject {
    pub fn new(env: &Env, object: &Object) -> Result<Self> {
        Ok(Self { env: env.raw(), reference: Some(object.create_ref()?), _js_thread: PhantomData })
    }

    pub fn get<'env>(&self, env: &'env Env) -> Result<Object<'env>> {
        self.reference.as_ref().expect("present until dropped").get_value(env)
    }
}

impl Drop for PersistentObject {
    fn drop(&mut self) {
        if let Some(reference) = self.reference.take() {
            let _ = reference.unref(&Env::from_raw(self.env));
        }
    }
}
