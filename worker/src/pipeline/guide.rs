//! Guide render of the simulated scene. (Scaffold, replaced by the pipeline work.)
