"""Defaults that several parts of chaosgd share, each defined once here."""

# Experiments compute a group's gradient over chunks of examples when all at once its step would need more than
# ALL_AT_ONCE_MAX bytes, in chunks whose step needs about CHUNK_BYTES: fixed sizes, so that the chunks, and with them
# the roundoff of the records, follow from the configuration alone, not from the machine or the executor. (Every
# step of the presets but the paper-scale CNN's fits in ALL_AT_ONCE_MAX: they run as before chunking existed.)
ALL_AT_ONCE_MAX = 16 * 2**30
CHUNK_BYTES = 4 * 2**30  # (the CNN: chunks of 660 MNIST images for groups of 6, 984 for 4; larger ones run faster)
CONFIDENCE = 0.95  # the level of every confidence interval: tables, reports and the learning-rate search
P_HIGH = 95.0  # p (%) at which sensitivity counts as fully developed: the onset of chaos
MOSTLY = 0.5  # "most networks": more than this fraction diverged (or failed to train) rules a learning rate out
SEARCH_INITIAL = 4  # initial conditions per evaluation of the learning-rate search (more where it is undecided)
SEARCH_COPIES = 1  # perturbed copies per initial condition there: an exponent's sign needs one; more smooth its fit
EPSILON_MAX = 1e-2  # the largest epsilon-ball radius, as a fraction of the weights' typical size: a larger ball
# starts its copies too near the phase-space diameter for an exponential phase (epsilon = 10 read p = 0)
