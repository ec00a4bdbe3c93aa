//! A stateless operator with an ok and an error output.

use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;

use super::{counters, Counters, S};

/// A stateless operator with an ok and an error output.
pub fn split_map<'s, D, A, B, P>(
    input: S<'s, D>,
    pact: P,
    name: &str,
    (counters_, count_ok): (Counters, bool),
    mut logic: impl FnMut(D) -> Result<A, B> + 'static,
) -> (S<'s, A>, S<'s, B>)
where
    D: 'static,
    A: Clone + 'static,
    B: Clone + 'static,
    P: ParallelizationContract<u64, Vec<D>>,
{
    let mut builder = OperatorBuilder::new(name.to_string(), input.scope());
    let mut input = builder.new_input(input, pact);
    let (ok_out, ok) = builder.new_output();
    let (err_out, err) = builder.new_output();
    let mut ok_out =
        OutputBuilder::<_, timely::container::CapacityContainerBuilder<Vec<A>>>::from(ok_out);
    let mut err_out =
        OutputBuilder::<_, timely::container::CapacityContainerBuilder<Vec<B>>>::from(err_out);
    builder.build(move |_| {
        move |_frontiers| {
            let mut ok_handle = ok_out.activate();
            let mut err_handle = err_out.activate();
            let (mut n_in, mut n_ok, mut n_err) = (0, 0, 0);
            input.for_each_stamp(|cap, data| {
                let mut oks = ok_handle.session(&cap);
                let mut errs = err_handle.session(&cap);
                for record in data.flat_map(|d| d.drain(..)) {
                    n_in += 1;
                    match logic(record) {
                        Ok(a) => {
                            n_ok += 1;
                            oks.give(a);
                        }
                        Err(b) => {
                            n_err += 1;
                            errs.give(b);
                        }
                    }
                }
            });
            if let Some(c) = counters(&counters_) {
                c.add_in(n_in);
                if count_ok {
                    c.add_out(0, n_ok);
                }
                c.add_out(1, n_err);
            }
        }
    });
    (ok, err)
}
