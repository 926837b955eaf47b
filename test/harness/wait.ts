export * from '../../src/throwaway/wait.js';
