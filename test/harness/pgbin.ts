export * from '../../src/throwaway/pgbin.js';
