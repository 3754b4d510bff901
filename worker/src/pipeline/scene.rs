//! Prompt understanding: free text → scene spec. (Scaffold, replaced by the pipeline work.)
