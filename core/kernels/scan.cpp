// placeholder: filled in by the layers work (issue 3)
