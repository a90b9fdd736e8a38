"""The lab's steps (the only pipeline), several methods in turn, the plots' frames and the start-up warm-up."""
