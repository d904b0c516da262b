"""Publishing: statistics, plots, the dataset card and the upload to the Hugging Face Hub."""
