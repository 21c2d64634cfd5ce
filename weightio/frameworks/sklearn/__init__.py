"""scikit-learn: fitted estimators and Pipelines read, rebuilt and run; .skops and trusted pickles."""
